"""Billing pages: top-ups, auto recharge, the saved card, payment history; the fake provider's
checkout page (test mode); and Stripe's webhook endpoint.

Thin, like every page: a form parses, one service acts, the page renders. Money moves only in
the services (ledger/services/payments.py, recharge.py, subscriptions.py).
"""

from __future__ import annotations

import logging
from functools import wraps

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from accounts.decorators import page_context, team_view
from accounts.forms import add_service_error
from accounts.models import Membership, Plan, Role
from accounts.selectors import membership_for_team
from gateway_billing.errors import ApplicationError, error_body
from ledger.models import AutoRecharge, Payment, PaymentCustomer, PaymentStatus
from ledger.selectors import balance_get
from ledger.services import payments as payment_services
from ledger.services.providers import FAKE_CARDS, provider_get, test_mode
from ledger.services.recharge import auto_recharge_configure, refill_for
from ledger.services.stripe_events import stripe_event_receive
from ledger.services.subscriptions import fake_subscription_pay
from pricing.money import MoneyError, format_credits_short, parse_credits

logger = logging.getLogger(__name__)
read_page = require_http_methods(["GET", "HEAD"])


def billing_view(view):
    """A team page for people who see the team's money: owners, admins, finance, and members
    an owner granted billing rights. Plain members get the 403 page."""

    @team_view()
    @wraps(view)
    def wrapper(request: HttpRequest, membership: Membership, **kwargs) -> HttpResponse:
        if membership.role == Role.MEMBER and not membership.can_manage_billing:
            return render(request, "accounts/forbidden.html", page_context(membership), status=403)
        return view(request, membership, **kwargs)

    return wrapper


class TopUpForm(forms.Form):
    option = forms.ChoiceField(label="Amount", widget=forms.RadioSelect)
    amount = forms.CharField(
        label="Custom amount (USD)",
        required=False,
        help_text=f"From ${settings.TOPUP_MIN_USD} to ${settings.TOPUP_MAX_USD:,}.",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "placeholder": "25.00"}),
    )

    def __init__(self, *args, options, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        choices = [(o.code, f"{o.label}: ${o.usd} for {o.credits} credits") for o in options]
        self.fields["option"].choices = [*choices, ("custom", "Another amount")]
        if choices:
            self.fields["option"].initial = choices[0][0]


class AutoRechargeForm(forms.Form):
    enabled = forms.BooleanField(label="Recharge automatically", required=False)
    threshold = forms.CharField(
        label="When the balance falls below (credits)",
        widget=forms.TextInput(attrs={"inputmode": "decimal"}),
    )
    amount = forms.CharField(
        label="Refill amount (USD)",
        required=False,
        help_text="Empty: your plan's auto-recharge pack.",
        widget=forms.TextInput(attrs={"inputmode": "decimal"}),
    )
    monthly_cap = forms.IntegerField(
        label="At most this many recharges a month", min_value=1, max_value=100, initial=10
    )

    def clean_threshold(self) -> int:
        try:
            value = parse_credits(self.cleaned_data["threshold"])
        except MoneyError as error:
            raise forms.ValidationError(str(error)) from None
        if value < 0:
            raise forms.ValidationError("Zero or more credits.")
        return value


def _billing_page(
    request: HttpRequest,
    membership: Membership,
    *,
    topup_form: TopUpForm | None = None,
    recharge_form: AutoRechargeForm | None = None,
    status: int = 200,
) -> HttpResponse:
    team = membership.team
    plan = team.subscription.plan
    options = payment_services.topup_options(plan=plan)
    recharge = AutoRecharge.objects.filter(team=team).first()
    if recharge_form is None:
        initial = {"threshold": "100", "monthly_cap": 10}
        if recharge is not None:
            initial = {
                "enabled": recharge.enabled,
                "threshold": format_credits_short(recharge.threshold_nano),
                "amount": payment_services.usd(recharge.amount_cents)
                if recharge.amount_cents
                else "",
                "monthly_cap": recharge.monthly_cap,
            }
        recharge_form = AutoRechargeForm(initial=initial)
    payments = Paginator(
        Payment.objects.filter(team=team).order_by("-created_at", "-pk"), 25
    ).get_page(request.GET.get("page"))
    for payment in payments:
        payment.amount_usd = payment_services.usd(payment.amount_cents)
        payment.refunded_usd = payment_services.usd(payment.refunded_cents)
        payment.credits = format_credits_short(payment.credits_nano)
    refill = refill_for(settings_row=recharge or AutoRecharge(), plan=plan)
    context = page_context(
        membership,
        plan=plan,
        balance=balance_get(team_id=team.pk),
        can_pay=payment_services.can_manage_billing(membership),
        options=options,
        topup_form=topup_form or TopUpForm(options=options),
        recharge=recharge,
        recharge_form=recharge_form,
        refill=refill,
        refill_usd=payment_services.usd(refill.amount_cents) if refill else None,
        refill_credits=format_credits_short(refill.credits_nano) if refill else None,
        customer=PaymentCustomer.objects.filter(team=team).first(),
        payments=payments,
        needs_action=[p for p in payments if p.status == PaymentStatus.REQUIRES_ACTION],
        test_mode=test_mode(),
        max_usd=settings.TOPUP_MAX_USD,
    )
    return render(request, "ledger/billing.html", context, status=status)


@billing_view
@read_page
def billing(request: HttpRequest, membership: Membership) -> HttpResponse:
    return _billing_page(request, membership)


def _absolute(request: HttpRequest, path: str) -> str:
    return request.build_absolute_uri(path)


@billing_view
@require_POST
def topup(request: HttpRequest, membership: Membership) -> HttpResponse:
    team = membership.team
    options = payment_services.topup_options(plan=team.subscription.plan)
    form = TopUpForm(request.POST, options=options)
    if form.is_valid():
        back = reverse("ledger:billing", kwargs={"slug": team.slug})
        try:
            payment = payment_services.topup_start(
                membership=membership,
                option=form.cleaned_data["option"],
                amount=form.cleaned_data["amount"],
                success_url=_absolute(request, f"{back}?paid=1"),
                cancel_url=_absolute(request, f"{back}?cancelled=1"),
            )
        except ApplicationError as error:
            if error.status_code == 403:
                messages.error(request, error.message)
                return redirect("ledger:billing", slug=team.slug)
            add_service_error(form, error)
        else:
            return redirect(payment.checkout_url)
    return _billing_page(request, membership, topup_form=form, status=400)


@billing_view
@require_POST
def auto_recharge(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = AutoRechargeForm(request.POST)
    if form.is_valid():
        try:
            row = auto_recharge_configure(
                membership=membership,
                enabled=form.cleaned_data["enabled"],
                threshold_nano=form.cleaned_data["threshold"],
                amount=form.cleaned_data["amount"] or None,
                monthly_cap=form.cleaned_data["monthly_cap"],
            )
        except ApplicationError as error:
            if error.status_code == 403:
                messages.error(request, error.message)
                return redirect("ledger:billing", slug=membership.team.slug)
            add_service_error(form, error)
        else:
            messages.success(
                request, "Auto recharge is on." if row.enabled else "Auto recharge is off."
            )
            return redirect("ledger:billing", slug=membership.team.slug)
    return _billing_page(request, membership, recharge_form=form, status=400)


@billing_view
@require_POST
def payment_finish(request: HttpRequest, membership: Membership, payment_id: int) -> HttpResponse:
    """An auto recharge the bank wants confirmed: the owner confirms it now."""
    payment = Payment.objects.filter(team=membership.team, pk=payment_id).first()
    if payment is None:
        raise Http404("No such payment.")
    if not payment_services.can_manage_billing(membership):
        messages.error(request, "Only owners and members with billing rights pay.")
        return redirect("ledger:billing", slug=membership.team.slug)
    if payment.status != PaymentStatus.REQUIRES_ACTION or not payment.payment_intent_id:
        messages.info(request, "This payment needs nothing more from you.")
        return redirect("ledger:billing", slug=membership.team.slug)
    back = reverse("ledger:billing", kwargs={"slug": membership.team.slug})
    try:
        url = provider_get(payment.provider).confirm_on_session(
            payment_intent_id=payment.payment_intent_id,
            return_url=_absolute(request, f"{back}?paid=1"),
        )
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("ledger:billing", slug=membership.team.slug)
    if not url:
        messages.success(request, "Payment confirmed: the credits arrive in a moment.")
        return redirect("ledger:billing", slug=membership.team.slug)
    return redirect(url)


# ---- the fake provider's checkout page (test mode) ---------------------------------------------


class FakeCheckoutForm(forms.Form):
    card = forms.ChoiceField(
        label="Test card",
        choices=[
            ("fake_pm_visa", "Visa 4242: pays"),
            ("fake_pm_declined", "Visa 0002: declined"),
            ("fake_pm_auth", "Visa 3155: pays now, later charges need authentication"),
        ],
        widget=forms.RadioSelect,
        initial="fake_pm_visa",
    )


def _fake_target(request: HttpRequest, session_id: str) -> tuple[Membership, dict]:
    """Who pays for what: a payment (fake_cs_pay_<id>) or a plan (fake_cs_sub_<team>_<plan>_…)."""
    parts = session_id.split("_")
    if len(parts) < 4 or parts[0] != "fake" or parts[1] != "cs" or not parts[3].isdigit():
        raise Http404("No such checkout.")
    if parts[2] == "pay":
        payment = Payment.objects.select_related("team").filter(pk=int(parts[3])).first()
        if payment is None:
            raise Http404("No such checkout.")
        slug, target = payment.team.slug, {"payment": payment}
    elif parts[2] == "sub" and len(parts) >= 6:
        plan = Plan.objects.filter(code=parts[4]).first()
        membership = Membership.objects.select_related("team").filter(team_id=int(parts[3])).first()
        if plan is None or membership is None:
            raise Http404("No such checkout.")
        slug, target = membership.team.slug, {"plan": plan}
    else:
        raise Http404("No such checkout.")
    membership = membership_for_team(user=request.user, slug=slug)
    if membership is None or not payment_services.can_manage_billing(membership):
        raise Http404("No such checkout.")
    if "plan" in target and membership.role != "owner":
        raise Http404("No such checkout.")
    return membership, target


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def fake_checkout(request: HttpRequest, session_id: str) -> HttpResponse:
    if not test_mode():
        raise Http404("Test-mode checkout is off on this server.")
    membership, target = _fake_target(request, session_id)
    team = membership.team
    payment = target.get("payment")
    back = "ledger:billing" if payment is not None else "accounts:plan"
    form = FakeCheckoutForm(request.POST or None)
    if payment is not None and payment.status not in (
        PaymentStatus.PENDING,
        PaymentStatus.REQUIRES_ACTION,
    ):  # paid, failed or cancelled: a second submit changes nothing and says so
        messages.info(request, "This checkout is closed.")
        return redirect(back, slug=team.slug)
    if request.method == "POST":
        if "cancel" in request.POST:
            if payment is not None:
                payment_services.payment_cancel(payment_id=payment.pk)
            messages.info(request, "Checkout cancelled: nothing was charged.")
            return redirect(back, slug=team.slug)
        if form.is_valid():
            card = form.cleaned_data["card"]
            if payment is None:
                return _fake_pay_plan(request, membership, target["plan"], session_id, card)
            return _fake_pay(request, payment, card)
    plan = target.get("plan")
    amount = (
        payment_services.usd(payment.amount_cents)
        if payment
        else payment_services.usd(
            plan.monthly_price_cents * (team.memberships.count() if plan.price_per_member else 1)
        )
    )
    context = page_context(
        membership, form=form, payment=payment, plan=plan, amount_usd=amount, test_mode=True
    )
    return render(request, "ledger/fake_checkout.html", context)


def _fake_pay(request: HttpRequest, payment: Payment, card: str) -> HttpResponse:
    outcome = FAKE_CARDS[card][2]
    # "authentication required" cards pay when the customer is present
    pays_now = outcome in ("succeeded", "requires_action")
    slug = payment.team.slug
    if pays_now:
        payment_services.payment_credit(
            payment_id=payment.pk,
            payment_intent_id=payment.payment_intent_id or f"fake_pi_{payment.pk}",
        )
        payment_services.payment_method_save(team_id=payment.team_id, payment_method_id=card)
        messages.success(
            request,
            f"Paid (test mode): {format_credits_short(payment.credits_nano)} credits added.",
        )
    else:
        payment_services.payment_fail(
            payment_id=payment.pk, code="card_declined", message="Your card was declined."
        )
        messages.error(request, "The test card was declined: nothing was charged.")
    return redirect("ledger:billing", slug=slug)


def _fake_pay_plan(
    request: HttpRequest, membership: Membership, plan: Plan, session_id: str, card: str
) -> HttpResponse:
    slug = membership.team.slug
    if FAKE_CARDS[card][2] == "failed":
        messages.error(request, "The test card was declined: the plan did not change.")
        return redirect("accounts:plan", slug=slug)
    payment_services.customer_ensure(team=membership.team, email=request.user.email)
    payment_services.payment_method_save(team_id=membership.team_id, payment_method_id=card)
    fake_subscription_pay(team_id=membership.team_id, plan_code=plan.code, session_id=session_id)
    messages.success(request, f"You are on the {plan.name} plan now (test mode).")
    return redirect("accounts:plan", slug=slug)


# ---- Stripe's webhook ------------------------------------------------------------------------


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """2xx only once the event is stored; a bad signature is a 400 Stripe will show."""
    try:
        event = stripe_event_receive(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
    except ApplicationError as error:
        body = error_body(error.code, error.message, error.fields)
        return JsonResponse(body, status=error.status_code)
    return JsonResponse({"received": True, "id": event.event_id, "status": event.status})
