"""The catalog admin: pages open for staff, prices are versioned not edited, CSV import/export."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from pricing import selectors
from pricing.models import Model, Price, Provider
from ratelimits.models import TeamTpmOverride, TpmLimit

pytestmark = pytest.mark.django_db

JULY = "2026-07-01T00:00:00+00:00"


@pytest.fixture
def staff(catalog, client):
    user = get_user_model().objects.create_superuser("staff@example.com", "staff@example.com", "x")
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def gpt5_price(catalog) -> Price:
    return Price.objects.get(model__name="gpt-5")


def _pages(price: Price) -> list[str]:
    model, provider = price.model, price.model.provider
    tpm = TpmLimit.objects.first()
    return [
        reverse("admin:pricing_provider_changelist"),
        reverse("admin:pricing_provider_add"),
        reverse("admin:pricing_provider_change", args=[provider.pk]),
        reverse("admin:pricing_model_changelist"),
        reverse("admin:pricing_model_changelist") + "?provider__id__exact=1&kind__exact=chat",
        reverse("admin:pricing_model_changelist") + "?q=claude",
        reverse("admin:pricing_model_add"),
        reverse("admin:pricing_model_change", args=[model.pk]),
        reverse("admin:pricing_price_changelist"),
        reverse("admin:pricing_price_changelist") + "?q=gpt&model__provider__id__exact=1",
        reverse("admin:pricing_price_add"),
        reverse("admin:pricing_price_add") + f"?model={model.pk}&from_version={price.pk}",
        reverse("admin:pricing_price_change", args=[price.pk]),
        reverse("admin:pricing_price_history", args=[price.pk]),
        reverse("admin:pricing_price_import_csv"),
        reverse("admin:pricing_price_export_csv"),
        reverse("admin:ratelimits_tpmlimit_changelist"),
        reverse("admin:ratelimits_tpmlimit_changelist") + "?plan__id__exact=1&q=gpt",
        reverse("admin:ratelimits_tpmlimit_change", args=[tpm.pk]),
        reverse("admin:ratelimits_teamtpmoverride_changelist"),
        reverse("admin:ratelimits_teamtpmoverride_add"),
    ]


def test_staff_can_open_every_catalog_page(staff, gpt5_price):
    for url in _pages(gpt5_price):
        assert staff.get(url).status_code == 200, url


def test_non_staff_are_sent_to_the_login_page(catalog, client, gpt5_price):
    user = get_user_model().objects.create_user("member@example.com", "member@example.com", "x")
    client.force_login(user)
    for url in _pages(gpt5_price):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url


def test_an_existing_price_is_read_only_with_a_new_version_link(staff, gpt5_price):
    page = staff.get(reverse("admin:pricing_price_change", args=[gpt5_price.pk])).content.decode()
    assert "New version from this" in page
    assert f"from_version={gpt5_price.pk}" in page
    assert 'name="_save"' not in page and "deletelink" not in page


def test_posting_to_the_change_page_changes_nothing(staff, gpt5_price):
    url = reverse("admin:pricing_price_change", args=[gpt5_price.pk])
    response = staff.post(url, {"model": gpt5_price.model_id, "input_per_1m": "0.01"})
    assert response.status_code == 403
    gpt5_price.refresh_from_db()
    assert gpt5_price.input_per_1m == Decimal("1.25")
    delete = reverse("admin:pricing_price_delete", args=[gpt5_price.pk])
    assert staff.post(delete, {"post": "yes"}).status_code == 403
    assert Price.objects.filter(pk=gpt5_price.pk).exists()


def _version_form(price: Price, **overrides) -> dict:
    data = {
        "model": price.model_id,
        "effective_from_0": "2026-07-01",
        "effective_from_1": "00:00:00",
        "gpu_second_prices": "{}",
        "note": "",
    }
    for name in selectors.PRICE_FIELDS:
        value = getattr(price, name)
        data[name] = "" if value is None else str(value)
    data.update(overrides)
    return data


def test_editing_a_price_in_the_admin_creates_a_new_version(staff, gpt5_price):
    add = reverse("admin:pricing_price_add")
    prefilled = staff.get(add, {"model": gpt5_price.model_id, "from_version": gpt5_price.pk})
    form = prefilled.context["adminform"].form
    assert Decimal(form.initial["output_per_1m"]) == Decimal("10")
    assert form.initial["effective_from"] > gpt5_price.effective_from

    response = staff.post(add, _version_form(gpt5_price, output_per_1m="12.50"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    versions = list(Price.objects.filter(model__name="gpt-5").order_by("effective_from"))
    assert len(versions) == 2
    old, new = versions
    assert old.pk == gpt5_price.pk
    assert (old.output_per_1m, old.input_per_1m) == (Decimal("10"), Decimal("1.25"))
    assert (new.output_per_1m, new.input_per_1m) == (Decimal("12.5"), Decimal("1.25"))
    assert new.effective_from == datetime(2026, 7, 1, tzinfo=UTC)
    assert new.author == staff.user
    assert new.cache_write_per_1m is None


def test_the_admin_refuses_a_version_that_rewrites_history(staff, gpt5_price):
    add = reverse("admin:pricing_price_add")
    early = _version_form(gpt5_price, effective_from_0="2024-12-31", output_per_1m="1")
    response = staff.post(add, early)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "never rewritten" in str(errors["effective_from"])
    negative = _version_form(gpt5_price, output_per_1m="-1")
    assert staff.post(add, negative).status_code == 200
    assert Price.objects.filter(model__name="gpt-5").count() == 1


def test_the_model_page_shows_the_price_history_and_a_new_version_link(staff, gpt5_price):
    page = staff.get(reverse("admin:pricing_model_change", args=[gpt5_price.model_id]))
    html = page.content.decode()
    assert "price history (newest first)" in html.lower()
    assert "Add a new price version" in html
    assert f"from_version={gpt5_price.pk}" in html


def test_editing_a_model_bumps_the_catalog(staff, gpt5_price):
    book = selectors.price_book()
    model = gpt5_price.model
    url = reverse("admin:pricing_model_change", args=[model.pk])
    data = {
        "provider": model.provider_id,
        "name": model.name,
        "display_name": "GPT-5 (flagship)",
        "kind": "chat",
        "prices-TOTAL_FORMS": "0",
        "prices-INITIAL_FORMS": "0",
        "prices-MIN_NUM_FORMS": "0",
        "prices-MAX_NUM_FORMS": "1000",
    }
    assert staff.post(url, data).status_code == 302
    assert selectors.price_book() is not book
    assert selectors.price_book().model(name="gpt-5").display_name == "GPT-5 (flagship)"


def test_tpm_limits_are_editable_in_the_list(staff):
    limit = TpmLimit.objects.get(plan__code="free", model__name="gpt-5")
    url = reverse("admin:ratelimits_tpmlimit_changelist") + "?q=gpt-5-nano"
    page = staff.get(url)
    assert 'name="form-0-tokens_per_minute"' in page.content.decode()
    assert limit.tokens_per_minute == 18_000


def test_a_team_override_can_be_added(staff, team):
    model = Model.objects.get(name="gpt-5")
    url = reverse("admin:ratelimits_teamtpmoverride_add")
    response = staff.post(
        url, {"team": team.pk, "model": model.pk, "tokens_per_minute": "1000000", "note": "MSA"}
    )
    assert response.status_code == 302
    assert TeamTpmOverride.objects.get(team=team, model=model).tokens_per_minute == 1_000_000


# ---- CSV ------------------------------------------------------------------------------------


def test_export_downloads_the_current_price_list(staff):
    response = staff.get(reverse("admin:pricing_price_export_csv"))
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    text = response.content.decode()
    assert text == selectors.price_list_export()
    assert "openai,gpt-5,1.25,0.125,10.00,,,,,," in text.splitlines()


def test_the_changelist_links_to_import_and_export(staff):
    page = staff.get(reverse("admin:pricing_price_changelist")).content.decode()
    assert reverse("admin:pricing_price_import_csv") in page
    assert reverse("admin:pricing_price_export_csv") in page


def _preview(client, csv_text: str, effective_from: str = JULY):
    return client.post(
        reverse("admin:pricing_price_import_csv"),
        {"csv_text": csv_text, "effective_from": effective_from, "preview": "Preview"},
    )


def test_import_preview_shows_changes_and_rejects_bad_rows_with_line_numbers(staff):
    text = selectors.price_list_export()
    lines = text.splitlines()
    gpt5_line = lines.index("openai,gpt-5,1.25,0.125,10.00,,,,,,") + 1  # 1-based
    lines[gpt5_line - 1] = "openai,gpt-5,1.25,0.125,12.00,,,,,,"
    lines.append("openai,gpt-7,1,1,1,,,,,,")
    lines.append("openai,o3,abc,0.5,8,,,,,,")  # o3 appears earlier too
    bad = "\n".join(lines) + "\n"
    response = _preview(staff, bad)
    assert response.status_code == 200
    preview = response.context["preview"]
    assert [(e.line, e.message.split(".")[0]) for e in preview.errors][:1] == [
        (len(lines) - 1, "Unknown model 'gpt-7'")
    ]
    assert {e.line for e in preview.errors} == {len(lines) - 1, len(lines)}
    html = response.content.decode()
    assert "Unknown model" in html and f"<td>{len(lines) - 1}</td>" in html
    assert 'name="apply"' not in html  # no confirm button while there are errors
    assert [row.model.name for row in preview.changes] == ["gpt-5"]
    assert f"<td>{gpt5_line}</td>" in html and "12.00" in html

    response = staff.post(
        reverse("admin:pricing_price_import_csv"),
        {"csv_text": bad, "effective_from": JULY, "apply": "1"},
    )
    assert response.status_code == 200
    assert Price.objects.count() == 32


def test_import_confirm_applies_the_changes(staff):
    text = selectors.price_list_export().replace(
        "openai,gpt-5,1.25,0.125,10.00", "openai,gpt-5,1.25,0.125,12.00"
    )
    response = _preview(staff, text)
    html = response.content.decode()
    assert 'name="apply"' in html and "csrfmiddlewaretoken" in html
    confirm = response.context["confirm_form"]
    response = staff.post(
        reverse("admin:pricing_price_import_csv"),
        {
            "csv_text": confirm.initial["csv_text"],
            "effective_from": confirm.initial["effective_from"],
            "apply": "Create",
        },
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("admin:pricing_price_changelist")
    assert "1 new price version(s)" in response.content.decode()
    new = Price.objects.filter(model__name="gpt-5").order_by("-effective_from").first()
    assert new.output_per_1m == Decimal("12")
    assert new.effective_from == datetime(2026, 7, 1, tzinfo=UTC)
    assert new.author == staff.user


def test_import_accepts_an_uploaded_file(staff):
    from django.core.files.uploadedfile import SimpleUploadedFile

    text = selectors.price_list_export().replace(",o3,2.00,0.50,8.00,", ",o3,2.00,0.50,9.00,")
    upload = SimpleUploadedFile("prices.csv", text.encode("utf-8-sig"), content_type="text/csv")
    response = staff.post(
        reverse("admin:pricing_price_import_csv"),
        {"csv_file": upload, "effective_from": JULY, "preview": "Preview"},
    )
    assert [row.model.name for row in response.context["preview"].changes] == ["o3"]


def test_export_then_import_is_a_no_op_in_the_admin(staff):
    text = staff.get(reverse("admin:pricing_price_export_csv")).content.decode()
    response = _preview(staff, text)
    preview = response.context["preview"]
    assert preview.errors == [] and preview.changes == []
    assert "Nothing to import" in response.content.decode()
    staff.post(
        reverse("admin:pricing_price_import_csv"),
        {"csv_text": text, "effective_from": JULY, "apply": "1"},
    )
    assert Price.objects.count() == 32


def test_import_without_content_shows_the_form_error(staff):
    response = _preview(staff, "")
    assert response.status_code == 200
    assert "Upload a CSV file or paste its content" in response.content.decode()


def test_provider_admin_counts_models(staff):
    page = staff.get(reverse("admin:pricing_provider_changelist")).content.decode()
    assert "Google Gemini" in page
    assert Provider.objects.count() == 3
