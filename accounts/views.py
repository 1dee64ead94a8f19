"""Account pages: sign up, log in, teams, members, invitations, API keys, projects, the plan,
webhooks and the audit log.

Thin: a form parses, one service writes (or a selector reads), a template renders. Every team
page goes through ``team_view``, which resolves the membership and applies the role matrix.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView, redirect_to_login
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from gateway_billing.errors import ApplicationError
from ledger.selectors import balance_get
from ledger.services.alerts import balance_low_threshold_set
from ledger.services.providers import test_mode
from ledger.services.subscriptions import (
    subscription_cancel,
    subscription_checkout_start,
    subscription_resume,
)
from pricing.money import MoneyError, cents_to_usd, format_usd, parse_credits

from . import selectors, services
from .decorators import AUDITORS, MANAGERS, OWNERS, page_context, team_view
from .forms import (
    ApiKeyCreateForm,
    InvitationCreateForm,
    LoginForm,
    PlanChangeForm,
    ProjectCreateForm,
    RoleChangeForm,
    SignupForm,
    TeamCreateForm,
    WebhookEndpointCreateForm,
    add_service_error,
)
from .models import Membership, Role, SubscriptionStatus
from .services.webhooks import BACKOFF, MAX_ATTEMPTS

# A form page: GET shows it, POST submits it; anything else is a 405.
form_page = require_http_methods(["GET", "HEAD", "POST"])
read_page = require_http_methods(["GET", "HEAD"])


def client_ip(request: HttpRequest) -> str | None:
    """The peer address, for the audit log. Not X-Forwarded-For: anyone can send that; a
    trusted proxy in front should set REMOTE_ADDR instead."""
    return request.META.get("REMOTE_ADDR") or None


# ---- account ---------------------------------------------------------------------------------


def _safe_next(request: HttpRequest) -> str | None:
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return None


@form_page
def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user, team = services.user_signup(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
                team_name=form.cleaned_data["team_name"],
            )
        except ApplicationError as exc:
            add_service_error(form, exc)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, f"Welcome! Your team {team.name} is on the Free plan.")
            return redirect(_safe_next(request) or reverse("accounts:team", args=[team.slug]))
    status = 400 if form.is_bound else 200
    return render(
        request, "accounts/signup.html", {"form": form, "next": _safe_next(request)}, status=status
    )


class EmailLoginView(LoginView):
    form_class = LoginForm
    template_name = "registration/login.html"


def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("accounts:login")
    membership = selectors.membership_first(user=request.user)
    if membership is None:
        return render(request, "accounts/no_team.html")
    return redirect("accounts:team", slug=membership.team.slug)


@login_required
@form_page
def team_create(request: HttpRequest) -> HttpResponse:
    form = TeamCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = services.team_create(name=form.cleaned_data["name"], owner=request.user)
        except ApplicationError as exc:
            add_service_error(form, exc)
        else:
            messages.success(request, f"Team {team.name} created on the Free plan.")
            return redirect("accounts:team", slug=team.slug)
    status = 400 if form.is_bound else 200
    return render(request, "accounts/team_create.html", {"form": form}, status=status)


# ---- team dashboard --------------------------------------------------------------------------


@team_view()
def team_dashboard(request: HttpRequest, membership: Membership) -> HttpResponse:
    summary = selectors.team_summary(team=membership.team)
    context = page_context(
        membership,
        summary=summary,
        notifications=selectors.notification_list(team=membership.team),
        low_threshold=selectors.balance_low_threshold(team=membership.team),
        balance=balance_get(team_id=membership.team_id),
    )
    return render(request, "accounts/team.html", context)


@team_view(roles=MANAGERS)
@require_POST
def balance_alert_set(request: HttpRequest, membership: Membership) -> HttpResponse:
    raw = request.POST.get("threshold", "").strip()
    try:
        threshold = parse_credits(raw, field="Threshold") if raw else None
        if threshold is not None and threshold < 0:
            raise MoneyError("Threshold must not be negative.")
    except MoneyError as exc:
        messages.error(request, str(exc))
    else:
        balance_low_threshold_set(team_id=membership.team_id, threshold_nano=threshold)
        messages.success(
            request,
            "Balance alert switched off."
            if threshold is None
            else f"You will be alerted when the balance drops below {raw} credits.",
        )
    return redirect("accounts:team", slug=membership.team.slug)


# ---- members and invitations -----------------------------------------------------------------


def _members_page(
    request: HttpRequest,
    membership: Membership,
    *,
    invite_form: InvitationCreateForm | None = None,
    role_error: tuple[int, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    team = membership.team
    is_owner = membership.role in OWNERS
    members = list(selectors.membership_list(team=team))
    for m in members:  # a failed role change shows its error on its own row
        m.role_error = role_error[1] if role_error and role_error[0] == m.pk else None
    context = page_context(
        membership,
        members=members,
        role_choices=Role.choices,
        invitations=(
            selectors.invitation_pending_list(team=team) if membership.role in MANAGERS else []
        ),
        invite_form=invite_form or InvitationCreateForm(can_invite_owner=is_owner),
    )
    return render(request, "accounts/members.html", context, status=status)


@team_view()
def member_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    return _members_page(request, membership)


@team_view(roles=MANAGERS)
@require_POST
def invitation_create(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = InvitationCreateForm(request.POST, can_invite_owner=membership.role in OWNERS)
    if form.is_valid():
        try:
            invitation, _ = services.invitation_create(
                team=membership.team,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                invited_by=request.user,
                ip=client_ip(request),
            )
        except ApplicationError as exc:
            add_service_error(form, exc)
        else:
            messages.success(request, f"Invitation sent to {invitation.email}.")
            return redirect("accounts:members", slug=membership.team.slug)
    return _members_page(request, membership, invite_form=form, status=400)


@team_view(roles=MANAGERS)
@require_POST
def invitation_revoke(
    request: HttpRequest, membership: Membership, invitation_id: int
) -> HttpResponse:
    invitation = selectors.invitation_get(team=membership.team, invitation_id=invitation_id)
    if invitation is None:
        raise Http404("No such invitation.")
    services.invitation_revoke(invitation=invitation, actor=request.user, ip=client_ip(request))
    messages.success(request, f"Invitation to {invitation.email} revoked.")
    return redirect("accounts:members", slug=membership.team.slug)


@team_view(roles=OWNERS)
@require_POST
def membership_role_change(
    request: HttpRequest, membership: Membership, membership_id: int
) -> HttpResponse:
    target = selectors.membership_get(team=membership.team, membership_id=membership_id)
    if target is None:
        raise Http404("No such member.")
    form = RoleChangeForm(request.POST, prefix=f"m{target.pk}")
    if not form.is_valid():
        return _members_page(
            request, membership, role_error=(target.pk, "Choose a valid role."), status=400
        )
    try:
        changed = services.membership_role_change(
            membership=target,
            role=form.cleaned_data["role"],
            actor=request.user,
            ip=client_ip(request),
        )
    except ApplicationError as exc:
        return _members_page(request, membership, role_error=(target.pk, exc.message), status=400)
    messages.success(request, f"{changed.user.email} is now {changed.get_role_display()}.")
    return redirect("accounts:members", slug=membership.team.slug)


@form_page
def invitation_detail(request: HttpRequest, token: str) -> HttpResponse:
    invitation = selectors.invitation_by_token(token=token)
    if invitation is None or not invitation.is_pending:
        return render(
            request,
            "accounts/invitation_invalid.html",
            {"message": "This invitation is unknown, used or expired. Ask for a new one."},
            status=404,
        )
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect_to_login(request.path)
        try:
            joined = services.invitation_accept(
                token=token, user=request.user, ip=client_ip(request)
            )
        except ApplicationError as exc:
            return render(
                request,
                "accounts/invitation_invalid.html",
                {"message": exc.message},
                status=exc.status_code,
            )
        messages.success(request, f"You joined {joined.team.name} as {joined.get_role_display()}.")
        return redirect("accounts:team", slug=joined.team.slug)
    user = request.user
    user_email = (user.email or user.username).lower() if user.is_authenticated else None
    context = {
        "invitation": invitation,
        "user_email": user_email,
        "is_invitee": user_email == invitation.email,
    }
    return render(request, "accounts/invitation.html", context)


# ---- API keys --------------------------------------------------------------------------------


@team_view()
def api_key_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    keys = selectors.api_key_list(team=membership.team)
    return render(request, "accounts/keys.html", page_context(membership, keys=keys))


@team_view(roles=MANAGERS)
@form_page
def api_key_create(request: HttpRequest, membership: Membership) -> HttpResponse:
    team = membership.team
    form = ApiKeyCreateForm(request.POST or None, projects=selectors.project_list(team=team))
    if request.method == "POST" and form.is_valid():
        try:
            created = services.api_key_create(
                team=team,
                scopes=form.cleaned_data["scopes"],
                name=form.cleaned_data["name"],
                project=form.cleaned_data["project"],
                member=membership,
                created_by=request.user,
                ip=client_ip(request),
            )
        except ApplicationError as exc:
            add_service_error(form, exc)
        else:
            # The secret exists only in this response: never stored, never in a URL or session.
            response = render(
                request,
                "accounts/key_created.html",
                page_context(membership, key=created.key, secret=created.secret),
                status=201,
            )
            add_never_cache_headers(response)
            return response
    status = 400 if form.is_bound else 200
    return render(
        request, "accounts/key_create.html", page_context(membership, form=form), status=status
    )


@team_view(roles=MANAGERS)
@require_POST
def api_key_revoke(request: HttpRequest, membership: Membership, key_id: int) -> HttpResponse:
    key = selectors.api_key_get(team=membership.team, key_id=key_id)
    if key is None:
        raise Http404("No such key.")
    services.api_key_revoke(key=key, actor=request.user, ip=client_ip(request))
    messages.success(request, f"Key {key.prefix}… revoked; its next request is refused.")
    return redirect("accounts:keys", slug=membership.team.slug)


# ---- projects --------------------------------------------------------------------------------


@team_view(roles=MANAGERS)
@form_page
def project_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    team = membership.team
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_create(
                team=team, slug=form.cleaned_data["slug"], name=form.cleaned_data["name"]
            )
        except ApplicationError as exc:
            add_service_error(form, exc)
        else:
            messages.success(request, f"Project {project.slug} created.")
            return redirect("accounts:projects", slug=team.slug)
    context = page_context(membership, projects=selectors.project_list(team=team), form=form)
    status = 400 if form.is_bound else 200
    return render(request, "accounts/projects.html", context, status=status)


# ---- the plan --------------------------------------------------------------------------------


def _plan_page(
    request: HttpRequest,
    membership: Membership,
    *,
    form: PlanChangeForm | None = None,
    status: int = 200,
) -> HttpResponse:
    team = membership.team
    subscription = getattr(team, "subscription", None)  # teams made in the admin may lack one
    plans = selectors.plan_list()
    for plan in plans:  # exact dollars for the table
        plan.price_usd = format_usd(cents_to_usd(plan.monthly_price_cents))
    context = page_context(
        membership,
        subscription=subscription,
        plans=plans,
        test_mode=test_mode(),
        form=form
        or PlanChangeForm(plans=plans, initial={"plan": getattr(subscription, "plan", None)}),
    )
    return render(request, "accounts/plan.html", context, status=status)


@team_view()
@read_page
def plan_page(request: HttpRequest, membership: Membership) -> HttpResponse:
    return _plan_page(request, membership)


@team_view(roles=OWNERS)
@require_POST
def plan_change(request: HttpRequest, membership: Membership) -> HttpResponse:
    """A paid plan goes through the payment provider's checkout (the plan changes when the
    first invoice is paid); Free cancels at the end of the cycle."""
    form = PlanChangeForm(request.POST, plans=selectors.plan_list())
    if form.is_valid():
        plan = form.cleaned_data["plan"]
        team = membership.team
        back = reverse("accounts:plan", kwargs={"slug": team.slug})
        current = getattr(team, "subscription", None)  # teams made in the admin may lack one
        if current is None:
            form.add_error(None, "This team has no subscription yet; ask support to set one up.")
            return _plan_page(request, membership, form=form, status=400)
        try:
            if (  # the current plan again, while its cancellation is pending: keep it
                current.plan_id == plan.pk
                and current.cancel_at_period_end
                and current.status != SubscriptionStatus.CANCELED
            ):
                subscription_resume(membership=membership, ip=client_ip(request))
                messages.success(request, "The cancellation is undone: your plan continues.")
                return redirect("accounts:plan", slug=team.slug)
            if plan.monthly_price_cents:
                url = subscription_checkout_start(
                    membership=membership,
                    plan=plan,
                    success_url=request.build_absolute_uri(f"{back}?subscribed=1"),
                    cancel_url=request.build_absolute_uri(back),
                )
                return redirect(url)
            subscription = subscription_cancel(membership=membership, ip=client_ip(request))
        except ApplicationError as exc:
            add_service_error(form, exc)
        else:
            end = f"{subscription.current_cycle_end:%Y-%m-%d %H:%M} UTC"
            messages.success(
                request, f"You move to the {plan.name} plan at the end of the cycle ({end})."
            )
            return redirect("accounts:plan", slug=team.slug)
    return _plan_page(request, membership, form=form, status=400)


@team_view(roles=OWNERS)
@require_POST
def plan_resume(request: HttpRequest, membership: Membership) -> HttpResponse:
    try:
        subscription_resume(membership=membership, ip=client_ip(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "The cancellation is undone: your plan continues.")
    return redirect("accounts:plan", slug=membership.team.slug)


# ---- webhooks --------------------------------------------------------------------------------


def _webhooks_page(
    request: HttpRequest,
    membership: Membership,
    *,
    form: WebhookEndpointCreateForm | None = None,
    status: int = 200,
) -> HttpResponse:
    team = membership.team
    context = page_context(
        membership,
        endpoints=selectors.webhook_endpoint_list(team=team),
        deliveries=selectors.webhook_delivery_list(team=team),
        form=form or WebhookEndpointCreateForm(),
        max_attempts=MAX_ATTEMPTS,
        backoff=", ".join(_duration(step) for step in BACKOFF),
    )
    response = render(request, "accounts/webhooks.html", context, status=status)
    if membership.role in MANAGERS:
        add_never_cache_headers(response)  # it shows signing secrets
    return response


def _duration(step) -> str:
    minutes = int(step.total_seconds()) // 60
    return f"{minutes // 60} h" if minutes >= 60 else f"{minutes} min"


@team_view()
@read_page
def webhook_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    return _webhooks_page(request, membership)


@team_view(roles=MANAGERS)
@require_POST
def webhook_endpoint_create(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = WebhookEndpointCreateForm(request.POST)
    if form.is_valid():
        try:
            endpoint = services.webhook_endpoint_create(
                team=membership.team,
                url=form.cleaned_data["url"],
                event_types=form.cleaned_data["event_types"],
                actor=request.user,
                ip=client_ip(request),
            )
        except ApplicationError as exc:
            add_service_error(form, exc)
        else:
            messages.success(request, f"Endpoint {endpoint.url} added; its secret is below.")
            return redirect("accounts:webhooks", slug=membership.team.slug)
    return _webhooks_page(request, membership, form=form, status=400)


def _endpoint_set_active(
    request: HttpRequest, membership: Membership, endpoint_id: int, *, active: bool
) -> HttpResponse:
    endpoint = selectors.webhook_endpoint_get(team=membership.team, endpoint_id=endpoint_id)
    if endpoint is None:
        raise Http404("No such endpoint.")
    services.webhook_endpoint_update(
        endpoint=endpoint, actor=request.user, is_active=active, ip=client_ip(request)
    )
    state = "enabled" if active else "disabled"
    messages.success(request, f"Endpoint {endpoint.url} {state}.")
    return redirect("accounts:webhooks", slug=membership.team.slug)


@team_view(roles=MANAGERS)
@require_POST
def webhook_endpoint_disable(
    request: HttpRequest, membership: Membership, endpoint_id: int
) -> HttpResponse:
    return _endpoint_set_active(request, membership, endpoint_id, active=False)


@team_view(roles=MANAGERS)
@require_POST
def webhook_endpoint_enable(
    request: HttpRequest, membership: Membership, endpoint_id: int
) -> HttpResponse:
    return _endpoint_set_active(request, membership, endpoint_id, active=True)


@team_view(roles=MANAGERS)
@require_POST
def webhook_delivery_resend(
    request: HttpRequest, membership: Membership, delivery_id: int
) -> HttpResponse:
    delivery = selectors.webhook_delivery_get(team=membership.team, delivery_id=delivery_id)
    if delivery is None:
        raise Http404("No such delivery.")
    try:
        services.webhook_delivery_resend(
            delivery=delivery, actor=request.user, ip=client_ip(request)
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Event {delivery.event.event_id} queued to send again.")
    return redirect("accounts:webhooks", slug=membership.team.slug)


# ---- audit log -------------------------------------------------------------------------------

AUDIT_PAGE_SIZE = 50


@team_view(roles=AUDITORS)
@read_page
def audit_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    entries = selectors.audit_entry_list(team=membership.team)
    page = Paginator(entries, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    for entry in page.object_list:  # shown as JSON, as the API returns them
        entry.before_json = json.dumps(entry.before) if entry.before is not None else ""
        entry.after_json = json.dumps(entry.after) if entry.after is not None else ""
    return render(request, "accounts/audit.html", page_context(membership, page=page))
