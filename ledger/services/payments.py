"""Top-ups and the crediting of every payment.

A top-up is a ``Payment`` (pending) and a Checkout session at the provider. Credits land when
the provider says the money arrived (``payment_credit``): Stripe's events, or the fake
provider's checkout page, through the same function. ``payment_credit`` locks the payment row
and writes one ledger entry whose reference is ``payment:<id>``, so however many times and in
whatever order the events arrive, a payment credits once. A refund writes a refund entry for
the refunded share of the credits (``payment_refund_record``), once per refunded amount.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Plan, Role, Subscription, Team
from gateway_billing.errors import ApplicationError
from ledger.models import (
    EntryKind,
    LedgerEntry,
    LotSource,
    Payment,
    PaymentCustomer,
    PaymentKind,
    PaymentStatus,
)
from pricing.money import NANO, format_credits

from .alerts import team_notify
from .book import Book
from .credits import credits_grant
from .providers import LineItem, provider_get, provider_name

CREDITED = (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED)


def usd(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def credits_for_cents(cents: int) -> int:
    """Credits bought by a USD amount at CREDITS_PER_USD, in nano-credits (exact, floored)."""
    return int(Decimal(cents) * Decimal(str(settings.CREDITS_PER_USD)) * NANO / 100)


# ---- who may pay, and what ----------------------------------------------------------------------


def can_manage_billing(membership: Membership) -> bool:
    """Owners, and members an owner granted billing rights."""
    return membership.role == Role.OWNER or membership.can_manage_billing


def require_billing_rights(membership: Membership) -> None:
    if not can_manage_billing(membership):
        raise ApplicationError(
            "forbidden",
            "Only owners, and members an owner granted billing rights, manage payments.",
            status_code=403,
        )


@dataclass(frozen=True)
class TopUpOption:
    code: str
    label: str
    amount_cents: int
    credits_nano: int

    @property
    def usd(self) -> str:
        return usd(self.amount_cents)

    @property
    def credits(self) -> str:
        return format_credits(self.credits_nano)


def topup_options(*, plan: Plan) -> list[TopUpOption]:
    """The plan's add-on pack, then the prepaid amounts at CREDITS_PER_USD."""
    if not plan.can_purchase_credits:
        return []
    options = []
    if plan.addon_pack_credits and plan.addon_pack_price_cents:
        options.append(
            TopUpOption(
                code="pack",
                label=f"{plan.name} add-on pack",
                amount_cents=plan.addon_pack_price_cents,
                credits_nano=plan.addon_pack_credits * NANO,
            )
        )
    for dollars in settings.TOPUP_AMOUNTS_USD:
        options.append(
            TopUpOption(
                code=f"usd-{dollars}",
                label=f"${dollars:,} prepaid",
                amount_cents=dollars * 100,
                credits_nano=credits_for_cents(dollars * 100),
            )
        )
    return options


def custom_amount_cents(raw: str) -> int:
    """A custom top-up in USD ("25" or "25.50") → cents, within the self-serve range."""
    low, high = settings.TOPUP_MIN_USD, settings.TOPUP_MAX_USD
    try:
        amount = Decimal(str(raw).strip().lstrip("$").replace(",", ""))
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
        raise ApplicationError(
            "invalid_amount",
            "Enter an amount in US dollars, like 25 or 25.50.",
            fields={"amount": ["Enter a dollar amount with at most two decimals."]},
        )
    if amount > high:
        raise ApplicationError(
            "amount_too_large",
            f"Top-ups above ${high:,} go through our sales team: contact sales for an "
            "invoice or a commitment.",
            fields={"amount": [f"At most ${high:,} self-serve; contact sales for more."]},
        )
    if amount < low:
        raise ApplicationError(
            "amount_too_small",
            f"The smallest top-up is ${low}.",
            fields={"amount": [f"At least ${low}."]},
        )
    return int(amount * 100)


def _resolve_option(plan: Plan, option: str | None, amount: str | None) -> TopUpOption:
    if option and option != "custom":
        for candidate in topup_options(plan=plan):
            if candidate.code == option:
                return candidate
        raise ApplicationError(
            "invalid_option",
            "Choose one of the offered amounts or enter your own.",
            fields={"option": ["Unknown choice."]},
        )
    cents = custom_amount_cents(amount or "")
    return TopUpOption(
        code="custom",
        label=f"${usd(cents)} top-up",
        amount_cents=cents,
        credits_nano=credits_for_cents(cents),
    )


# ---- customers --------------------------------------------------------------------------------


def customer_ensure(*, team: Team, email: str = "") -> PaymentCustomer:
    """The team's customer at the current provider, created once (the provider call carries
    an idempotency key, so two racing requests get the same customer)."""
    name = provider_name()
    existing = PaymentCustomer.objects.filter(team=team).first()
    if existing is not None and existing.provider == name:
        return existing
    customer_id = provider_get(name).customer_create(
        team_id=team.pk, team_name=team.name, email=email
    )
    customer, _ = PaymentCustomer.objects.update_or_create(
        team=team, defaults={"provider": name, "customer_id": customer_id, "payment_method_id": ""}
    )
    return customer


def payment_method_save(*, team_id: int, payment_method_id: str) -> None:
    """The card the customer paid with becomes the one auto recharge charges. The provider is
    asked for the card's brand and last digits before the row is locked, never under a lock."""
    customer = PaymentCustomer.objects.filter(team_id=team_id).first()
    if customer is None or not payment_method_id or customer.payment_method_id == payment_method_id:
        return
    try:
        brand, last4 = provider_get(customer.provider).card_details(
            payment_method_id=payment_method_id
        )
    except ApplicationError:
        brand, last4 = "", ""  # display only: the id is what charges need
    PaymentCustomer.objects.filter(pk=customer.pk).update(
        payment_method_id=payment_method_id, card_brand=brand, card_last4=last4
    )


# ---- top-ups ----------------------------------------------------------------------------------


def topup_start(
    *,
    membership: Membership,
    option: str | None,
    amount: str | None,
    success_url: str,
    cancel_url: str,
) -> Payment:
    """Open a Checkout session for a top-up; the caller redirects to ``payment.checkout_url``.
    The payment row is committed before the provider is called, so nothing is ever paid for
    that we have no record of."""
    require_billing_rights(membership)
    team = membership.team
    plan = Subscription.objects.select_related("plan").get(team=team).plan
    if not plan.can_purchase_credits:
        raise ApplicationError(
            "plan_cannot_buy",
            f"The {plan.name} plan cannot buy credits: upgrade to a paid plan first.",
            status_code=403,
        )
    chosen = _resolve_option(plan, option, amount)
    customer = customer_ensure(team=team, email=membership.user.email)
    payment = Payment.objects.create(
        team=team,
        kind=PaymentKind.TOPUP,
        provider=customer.provider,
        amount_cents=chosen.amount_cents,
        credits_nano=chosen.credits_nano,
        description=f"{chosen.label}: {format_credits(chosen.credits_nano)} credits",
        created_by=membership.user,
    )
    metadata = {"payment_id": str(payment.pk), "team_id": str(team.pk), "kind": "topup"}
    try:
        checkout = provider_get(customer.provider).checkout_payment(
            customer_id=customer.customer_id,
            item=LineItem(name=payment.description, unit_amount_cents=chosen.amount_cents),
            metadata=metadata,
            success_url=success_url,
            cancel_url=cancel_url,
            idempotency_key=f"checkout:{payment.pk}",
        )
    except ApplicationError as error:
        Payment.objects.filter(pk=payment.pk).update(
            status=PaymentStatus.FAILED, failure_message=error.message[:500]
        )
        raise
    Payment.objects.filter(pk=payment.pk).update(
        checkout_session_id=checkout.session_id, checkout_url=checkout.url
    )
    payment.checkout_session_id, payment.checkout_url = checkout.session_id, checkout.url
    return payment


# ---- crediting --------------------------------------------------------------------------------

_ENTRY_OF_KIND = {
    PaymentKind.TOPUP: (EntryKind.TOPUP, LotSource.ADDON, "topup.succeeded"),
    PaymentKind.AUTO_RECHARGE: (
        EntryKind.AUTO_RECHARGE,
        LotSource.AUTO_RECHARGE,
        "auto_recharge.succeeded",
    ),
}


def payment_reference(payment_id: int) -> str:
    return f"payment:{payment_id}"


def _lock_payment(**lookup) -> Payment | None:
    return Payment.objects.select_for_update().filter(**lookup).first()


def _remember(payment: Payment, **fields) -> list[str]:
    changed = []
    for name, value in fields.items():
        if value and getattr(payment, name) != value:
            setattr(payment, name, value)
            changed.append(name)
    return changed


@transaction.atomic
def payment_credit(
    *,
    payment_id: int,
    payment_intent_id: str | None = None,
    charge_id: str = "",
    receipt_url: str = "",
    raw: dict | None = None,
    now: datetime | None = None,
) -> bool:
    """The provider says the payment's money arrived: credit it, once. Returns whether this
    call credited (False: it already was, or the payment buys no credits)."""
    now = now or timezone.now()
    payment = _lock_payment(pk=payment_id)
    if payment is None:
        raise ApplicationError("unknown_payment", f"No payment {payment_id}.", status_code=404)
    changed = _remember(
        payment, payment_intent_id=payment_intent_id, charge_id=charge_id, receipt_url=receipt_url
    )
    if raw:
        payment.raw = {**payment.raw, raw.get("object", "object"): raw}
        changed.append("raw")
    if payment.status in CREDITED:
        if changed:
            payment.updated_at = now
            payment.save(update_fields=[*changed, "updated_at"])
        return False
    payment.status, payment.paid_at, payment.updated_at = PaymentStatus.SUCCEEDED, now, now
    payment.failure_code = payment.failure_message = ""
    payment.save()
    if payment.kind not in _ENTRY_OF_KIND or payment.credits_nano <= 0:
        return False
    kind, source, event = _ENTRY_OF_KIND[payment.kind]
    credits_grant(
        team_id=payment.team_id,
        kind=kind,
        source=source,
        amount_nano=payment.credits_nano,
        reference=payment_reference(payment.pk),
        reason=f"{payment.description} (${usd(payment.amount_cents)}, {payment.provider})",
    )
    team_notify(
        payment.team_id,
        kind=f"payment_{payment.kind}",
        event=event,
        title="Payment received" if payment.kind == PaymentKind.TOPUP else "Auto recharge paid",
        body=f"${usd(payment.amount_cents)} paid: {format_credits(payment.credits_nano)} "
        "credits added to your balance.",
        data={
            "payment_id": payment.pk,
            "amount_usd": usd(payment.amount_cents),
            "credits": format_credits(payment.credits_nano),
        },
    )
    if payment.kind == PaymentKind.AUTO_RECHARGE:
        from .recharge import recharge_succeeded  # recharge imports this module

        recharge_succeeded(payment=payment, now=now)
    return True


@transaction.atomic
def payment_fail(
    *,
    payment_id: int,
    code: str,
    message: str,
    payment_intent_id: str | None = None,
    status: str = PaymentStatus.FAILED,
    raw: dict | None = None,
    now: datetime | None = None,
) -> bool:
    """The provider says the payment failed (or needs the customer). Returns whether this
    call changed it: a credited payment never goes back, a repeated failure is a no-op."""
    now = now or timezone.now()
    payment = _lock_payment(pk=payment_id)
    if payment is None or payment.status in CREDITED or payment.status == status:
        return False
    if payment.status in (PaymentStatus.FAILED, PaymentStatus.CANCELED):
        return False
    _remember(payment, payment_intent_id=payment_intent_id)
    payment.status, payment.updated_at = status, now
    payment.failure_code, payment.failure_message = code[:60], message[:500]
    if raw:
        payment.raw = {**payment.raw, raw.get("object", "object"): raw}
    payment.save()
    if payment.kind == PaymentKind.AUTO_RECHARGE:
        from .recharge import recharge_failed

        recharge_failed(payment=payment, now=now)
    elif payment.kind == PaymentKind.TOPUP and status == PaymentStatus.FAILED:
        team_notify(
            payment.team_id,
            kind="payment_failed",
            event="topup.failed",
            title="Top-up failed",
            body=f"Your ${usd(payment.amount_cents)} top-up did not go through: {message or code}.",
            data={"payment_id": payment.pk, "amount_usd": usd(payment.amount_cents), "code": code},
        )
    return True


@transaction.atomic
def payment_cancel(*, payment_id: int, now: datetime | None = None) -> bool:
    """An abandoned checkout (expired session, or the customer went back)."""
    payment = _lock_payment(pk=payment_id)
    if payment is None or payment.status != PaymentStatus.PENDING:
        return False
    payment.status, payment.updated_at = PaymentStatus.CANCELED, now or timezone.now()
    payment.save(update_fields=["status", "updated_at"])
    return True


@transaction.atomic
def payment_refund_record(
    *,
    payment_id: int,
    refunded_cents_total: int,
    raw: dict | None = None,
    author_id: int | None = None,
    now: datetime | None = None,
) -> LedgerEntry | None:
    """The provider refunded ``refunded_cents_total`` of the payment so far: take back the same
    share of its credits (from its own lot first; what is already spent becomes overdraft).
    Cumulative, so a repeated or reordered event takes nothing twice."""
    payment = _lock_payment(pk=payment_id)
    if payment is None:
        return None
    total = min(refunded_cents_total, payment.amount_cents)
    if total <= payment.refunded_cents:
        return None
    if payment.status not in CREDITED:  # a refunded charge was paid: credit first, then refund
        payment_credit(payment_id=payment.pk, now=now)
        payment.refresh_from_db()
    share_before = payment.credits_nano * payment.refunded_cents // payment.amount_cents
    share_after = payment.credits_nano * total // payment.amount_cents
    take = share_after - share_before
    entry = None
    if take > 0:
        reference = f"refund:{payment.pk}:{total}"
        book = Book.open(payment.team_id, now=now)
        credited = (
            LedgerEntry.objects.filter(reference=payment_reference(payment.pk))
            .values_list("allocations", flat=True)
            .first()
        )
        prefer = next((a["lot"] for a in credited or [] if "lot" in a), None)
        allocations = book.spend(take, prefer_lot=prefer)
        book.post(
            EntryKind.REFUND,
            -take,
            allocations,
            reference,
            author_id=author_id,
            reason=f"Refund of ${usd(total - payment.refunded_cents)} on payment {payment.pk}",
        )
        book.close()
        entry = LedgerEntry.objects.get(reference=reference)
        team_notify(
            payment.team_id,
            kind="refund",
            event="refund.created",
            title="Refund issued",
            body=f"${usd(total - payment.refunded_cents)} refunded: "
            f"{format_credits(take)} credits taken back.",
            data={
                "payment_id": payment.pk,
                "refunded_usd": usd(total - payment.refunded_cents),
                "credits": format_credits(-take),
            },
        )
    payment.refunded_cents = total
    payment.status = (
        PaymentStatus.REFUNDED
        if total >= payment.amount_cents
        else PaymentStatus.PARTIALLY_REFUNDED
    )
    if raw:
        payment.raw = {**payment.raw, "refund": raw}
    payment.updated_at = now or timezone.now()
    payment.save()
    return entry


def payment_refund(*, payment: Payment, amount_cents: int, author_id: int | None) -> Payment:
    """Finance refunds (part of) a payment at the provider. Stripe's ``charge.refunded`` event
    writes the ledger entry; the fake provider has no events, so it is written here."""
    left = payment.amount_cents - payment.refunded_cents
    if payment.status not in CREDITED or not payment.payment_intent_id:
        raise ApplicationError("not_refundable", "Only a paid payment can be refunded.")
    if not 0 < amount_cents <= left:
        raise ApplicationError(
            "invalid_amount",
            f"Refund between $0.01 and ${usd(left)}.",
            fields={"amount": [f"At most ${usd(left)}."]},
        )
    total = payment.refunded_cents + amount_cents
    provider_get(payment.provider).refund(
        payment_intent_id=payment.payment_intent_id,
        amount_cents=amount_cents,
        idempotency_key=f"refund:{payment.pk}:{total}",
    )
    if payment.provider == "fake":
        payment_refund_record(
            payment_id=payment.pk, refunded_cents_total=total, author_id=author_id
        )
    payment.refresh_from_db()
    return payment


def payments_abandoned_cancel(*, older_than: timedelta = timedelta(hours=25)) -> int:
    """Checkout sessions live 24 hours: a top-up still pending after that was abandoned."""
    cutoff = timezone.now() - older_than
    ids = list(
        Payment.objects.filter(
            kind=PaymentKind.TOPUP, status=PaymentStatus.PENDING, created_at__lt=cutoff
        ).values_list("pk", flat=True)[:1000]
    )
    return sum(payment_cancel(payment_id=pk) for pk in ids)


__all__ = [
    "TopUpOption",
    "can_manage_billing",
    "credits_for_cents",
    "custom_amount_cents",
    "customer_ensure",
    "payment_cancel",
    "payment_credit",
    "payment_fail",
    "payment_method_save",
    "payment_refund",
    "payment_refund_record",
    "topup_options",
    "topup_start",
]
