"""Account pages. Team pages live under /t/<slug>/; each POST action has its own URL, so the
role it needs is stated once, on its view."""

from django.contrib.auth.views import LogoutView
from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("login/", views.EmailLoginView.as_view(), name="login"),
    path("logout/", LogoutView.as_view(), name="logout"),  # POST only (Django 5)
    path("teams/new/", views.team_create, name="team_create"),
    path("invitations/<str:token>/", views.invitation_detail, name="invitation"),
    path("t/<slug:slug>/", views.team_dashboard, name="team"),
    path("t/<slug:slug>/alerts/balance/", views.balance_alert_set, name="balance_alert"),
    path("t/<slug:slug>/members/", views.member_list, name="members"),
    path("t/<slug:slug>/members/invite/", views.invitation_create, name="invite"),
    path(
        "t/<slug:slug>/members/<int:membership_id>/role/",
        views.membership_role_change,
        name="role_change",
    ),
    path(
        "t/<slug:slug>/invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke,
        name="invitation_revoke",
    ),
    path("t/<slug:slug>/keys/", views.api_key_list, name="keys"),
    path("t/<slug:slug>/keys/new/", views.api_key_create, name="key_create"),
    path("t/<slug:slug>/keys/<int:key_id>/revoke/", views.api_key_revoke, name="key_revoke"),
    path("t/<slug:slug>/projects/", views.project_list, name="projects"),
    path("t/<slug:slug>/plan/", views.plan_page, name="plan"),
    path("t/<slug:slug>/plan/change/", views.plan_change, name="plan_change"),
    path("t/<slug:slug>/plan/resume/", views.plan_resume, name="plan_resume"),
    path("t/<slug:slug>/webhooks/", views.webhook_list, name="webhooks"),
    path("t/<slug:slug>/webhooks/new/", views.webhook_endpoint_create, name="webhook_create"),
    path(
        "t/<slug:slug>/webhooks/<int:endpoint_id>/disable/",
        views.webhook_endpoint_disable,
        name="webhook_disable",
    ),
    path(
        "t/<slug:slug>/webhooks/<int:endpoint_id>/enable/",
        views.webhook_endpoint_enable,
        name="webhook_enable",
    ),
    path(
        "t/<slug:slug>/webhooks/deliveries/<int:delivery_id>/resend/",
        views.webhook_delivery_resend,
        name="webhook_resend",
    ),
    path("t/<slug:slug>/audit/", views.audit_list, name="audit"),
]
