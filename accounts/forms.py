"""HTML forms: input parsing and field errors only; the rules live in services."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.password_validation import (
    password_validators_help_text_html,
    validate_password,
)

from gateway_billing.errors import ApplicationError

from .models import EventType, Plan, Project, Role, Scope

User = get_user_model()


def add_service_error(form: forms.Form, error: ApplicationError) -> None:
    """Show a service's error next to the field it names, else at the top of the form."""
    field = next((name for name in error.fields if name in form.fields), None)
    form.add_error(field, error.message)


class SignupForm(forms.Form):
    email = forms.EmailField(widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    password = forms.CharField(
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validators_help_text_html(),
    )
    team_name = forms.CharField(
        max_length=120,
        required=False,
        help_text="Your team starts on the Free plan. Empty: named after your email.",
    )

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip().lower()

    def clean(self) -> dict:
        data = super().clean()
        email, password = data.get("email"), data.get("password")
        if password:
            try:
                validate_password(password, User(username=email or "", email=email or ""))
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return data


class LoginForm(AuthenticationForm):
    """Log in with the email (the username is the lowercase email)."""

    username = forms.EmailField(
        label="Email", widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"})
    )
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "That email and password do not match an account.",
    }

    def clean_username(self) -> str:
        return self.cleaned_data["username"].strip().lower()


class TeamCreateForm(forms.Form):
    name = forms.CharField(max_length=120, help_text="The new team starts on the Free plan.")


class InvitationCreateForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def __init__(self, *args, can_invite_owner: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not can_invite_owner:
            self.fields["role"].choices = [c for c in Role.choices if c[0] != Role.OWNER]


class RoleChangeForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=120, help_text="What uses this key, e.g. “prod gateway”.")
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[Scope.USAGE_WRITE, Scope.AUTHORIZE],
        help_text="usage:write records usage, authorize asks before a request, usage:read reads "
        "balances and usage.",
    )
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(),
        required=False,
        empty_label="(no project: the whole team)",
        to_field_name="slug",
    )

    def __init__(self, *args, projects=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if projects is not None:
            self.fields["project"].queryset = projects
        self.fields["project"].label_from_instance = lambda p: f"{p.name} ({p.slug})"


class ProjectCreateForm(forms.Form):
    slug = forms.SlugField(max_length=60, help_text="Lowercase letters, digits and hyphens.")
    name = forms.CharField(max_length=120, required=False)


class PlanChangeForm(forms.Form):
    plan = forms.ModelChoiceField(
        queryset=Plan.objects.none(), to_field_name="code", widget=forms.RadioSelect
    )

    def __init__(self, *args, plans=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if plans is not None:
            self.fields["plan"].queryset = plans
        self.fields["plan"].label_from_instance = lambda p: (
            f"{p.name}: {p.monthly_credits:,} credits a month"
        )


class WebhookEndpointCreateForm(forms.Form):
    url = forms.URLField(
        max_length=500,
        assume_scheme="https",
        label="URL",
        help_text="An https:// URL that accepts POST requests with a JSON body.",
    )
    event_types = forms.MultipleChoiceField(
        choices=EventType.choices,
        widget=forms.CheckboxSelectMultiple,
        label="Events",
        help_text="The events sent to this URL.",
    )
