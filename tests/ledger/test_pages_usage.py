"""The usage page (chart and table, with its CSV export) and the ledger history page: figures
aggregated in the database, exact to the nano-credit, filtered by local days, readable by the
right roles, in a bounded number of queries.

| page                 | owner | admin | finance | member | outsider | anonymous |
|----------------------|-------|-------|---------|--------|----------|-----------|
| usage, usage CSV     |  yes  |  yes  |   yes   |  yes   |   404    |   login   |
| ledger history       |  yes  |  yes  |   yes   |  403   |   404    |   login   |
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.services import project_create
from ledger.models import EntryKind, LedgerEntry
from ledger.selectors_usage import usage_daily
from pricing.money import format_credits

from .conftest import grant
from .pages import PERSONA_FIXTURE, ROLES, credits_of, event, login, post_usage

pytestmark = pytest.mark.django_db


def nine(amount: Decimal) -> str:
    """A decimal amount of credits as the 9-place string the API and CSV use."""
    return format_credits(int(amount * 10**9))


@pytest.fixture
def scene(team, owner, admin_member, key_client):
    """Two keys: one of project `web` and the admin, one of the whole team and no member."""
    web = project_create(team=team, slug="web", name="Web app")
    web_api = key_client(team, name="web-key", project=web, member=admin_member.membership)
    team_api = key_client(team, name="team-key")
    now = timezone.now()
    results = {
        "web": post_usage(web_api, [event("w1"), event("w2", input_tokens=3000)]),
        "claude": post_usage(
            team_api, [event("c1", model="claude-sonnet-4-5-20250929", output_tokens=70)]
        ),
        "old": post_usage(team_api, [event("o1", at=now - timedelta(days=10))]),
    }
    return results


def table(client, team, **params):
    response = client.get(reverse("ledger:usage", args=[team.slug]), params)
    assert response.status_code == 200, response.content
    return {row.label: row for row in response.context["rows"]}, response


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        ("model", {"gpt-5": ("web", "old"), "claude-sonnet-4-5-20250929": ("claude",)}),
        ("project", {"Web app (web)": ("web",), "(no project)": ("claude", "old")}),
        ("member", {"admin@example.com": ("web",), "(no member)": ("claude", "old")}),
        ("key", {"web-key": ("web",), "team-key": ("claude", "old")}),
    ],
)
def test_the_table_groups_exact_credits_by_model_project_member_and_key(
    scene, team, owner, group_by, expected
):
    rows, response = table(login(owner.user), team, group_by=group_by)
    labels = {label.split(" (")[0] if group_by == "key" else label: row
              for label, row in rows.items()}  # fmt: skip
    assert set(labels) == set(expected)
    for label, parts in expected.items():
        results = [r for part in parts for r in scene[part]]
        assert labels[label].credits_nano == int(credits_of(results) * 10**9)
        assert labels[label].events == len(results)
    total = response.context["total"]
    everything = [r for part in scene.values() for r in part]
    assert total.credits_nano == int(credits_of(everything) * 10**9)
    assert nine(credits_of(everything)).rstrip("0") in response.content.decode()


def test_the_csv_export_is_the_same_table_with_exact_decimal_strings(scene, team, finance):
    client = login(finance.user)
    response = client.get(reverse("ledger:usage_export", args=[team.slug]), {"group_by": "model"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'attachment; filename="usage-team-1-' in response["Content-Disposition"]
    lines = list(csv.DictReader(io.StringIO(response.content.decode())))
    by_model = {line["model"]: line for line in lines}
    assert by_model["gpt-5"]["credits"] == nine(credits_of(scene["web"] + scene["old"]))
    assert by_model["claude-sonnet-4-5-20250929"]["credits"] == nine(credits_of(scene["claude"]))
    assert by_model["gpt-5"]["events"] == "3"
    assert by_model["gpt-5"]["input_tokens"] == str(1000 + 3000 + 1000)
    page_rows, _ = table(client, team, group_by="model")
    assert [line["model"] for line in lines] == list(page_rows)  # same rows, same order


def test_date_filters_pick_whole_days(scene, team, member):
    client = login(member.user)
    today = timezone.now().date()
    rows, _ = table(client, team, start=today.isoformat())
    assert rows["gpt-5"].events == 2  # the event of ten days ago is out
    old_day = (timezone.now() - timedelta(days=10)).date().isoformat()
    rows, _ = table(client, team, start=old_day, end=old_day)
    assert list(rows) == ["gpt-5"] and rows["gpt-5"].events == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "2026-13-01"}, "“From” is not a date"),
        ({"end": "yesterday"}, "“To” is not a date"),
        ({"start": "2026-05-02", "end": "2026-05-01"}, "“To” must be on or after “From”"),
        ({"start": "2024-01-01", "end": "2026-01-01"}, "Choose at most 400 days at once"),
        ({"group_by": "provider-x"}, "Group by model, project, member or API key"),
    ],
)
def test_bad_filters_say_what_is_wrong(scene, team, owner, params, message):
    client = login(owner.user)
    page = client.get(reverse("ledger:usage", args=[team.slug]), params)
    assert page.status_code == 400
    assert message in page.content.decode()
    assert page.context["rows"] is None
    export = client.get(reverse("ledger:usage_export", args=[team.slug]), params)
    assert export.status_code == 400 and message in export.content.decode()


def test_the_chart_embeds_30_days_of_decimal_strings_stacked_three_ways(scene, team, owner):
    response = login(owner.user).get(reverse("ledger:usage", args=[team.slug]))
    html = response.content.decode()
    assert 'id="usage-chart-data"' in html and 'id="usage-chart"' in html
    assert "vendor/chart.umd.min.js" in html and "//cdn" not in html
    start = html.index('id="usage-chart-data"')
    data = json.loads(html[html.index(">", start) + 1 : html.index("</script>", start)])
    assert len(data["days"]) == 30 and data["days"][-1] == timezone.now().date().isoformat()
    assert set(data["stacks"]) == {"model", "project", "member"}
    models = {s["label"]: s["credits"] for s in data["stacks"]["model"]}
    assert models["gpt-5"][-1] == nine(credits_of(scene["web"]))
    assert models["gpt-5"][-11] == nine(credits_of(scene["old"]))
    assert all(isinstance(v, str) for series in models.values() for v in series)
    projects = {s["label"]: s["credits"][-1] for s in data["stacks"]["project"]}
    assert projects["Web app (web)"] == nine(credits_of(scene["web"]))
    members = {s["label"]: s["credits"][-1] for s in data["stacks"]["member"]}
    assert members["(no member)"] == nine(credits_of(scene["claude"]))


def test_days_are_the_team_s_local_days(team, owner, key_client):
    team.time_zone = "Asia/Tokyo"  # UTC+9, no DST
    team.save(update_fields=["time_zone"])
    now = timezone.now()
    at = (now - timedelta(days=1)).replace(hour=20, minute=0, second=0, microsecond=0)
    results = post_usage(key_client(team), [event("late", at=at)])
    local_day = at.astimezone(ZoneInfo("Asia/Tokyo")).date()  # the next calendar day in UTC terms
    assert local_day != at.date()
    daily = usage_daily(team_id=team.id, time_zone=team.time_zone, now=now)
    series = daily.stacks["model"][0].nano
    assert series[daily.days.index(local_day)] == int(credits_of(results) * 10**9)
    if at.date() in daily.days:
        assert series[daily.days.index(at.date())] == 0
    client = login(owner.user)
    rows, _ = table(client, team, start=local_day.isoformat(), end=local_day.isoformat())
    assert rows["gpt-5"].events == 1
    rows, _ = table(client, team, start=at.date().isoformat(), end=at.date().isoformat())
    assert rows == {}


def test_a_chart_with_many_groups_keeps_the_largest_and_sums_the_rest(team, key_client):
    api = key_client(team)
    models = ["gpt-5", "gpt-4o", "o3", "claude-sonnet-4-5-20250929"]
    results = post_usage(api, [event(f"m{i}", model=m, input_tokens=1000 * (i + 1))
                               for i, m in enumerate(models)])  # fmt: skip
    daily = usage_daily(team_id=team.id, time_zone="UTC", max_series=3)
    series = daily.stacks["model"]
    ranked = sorted(zip(models, results, strict=True), key=lambda mr: -Decimal(mr[1]["credits"]))
    assert [s.label for s in series] == [ranked[0][0], ranked[1][0], "Other"]
    assert series[2].nano[-1] == int(credits_of([ranked[2][1], ranked[3][1]]) * 10**9)
    total = sum(s.nano[-1] for s in series)
    assert total == int(credits_of(results) * 10**9)  # nothing lost in "Other"


def _usage_at_scale(team, key_client, admin_member, n_events: int, n_projects: int) -> None:
    tag = f"x{n_events}"
    now = timezone.now()
    for p in range(n_projects):
        project = project_create(team=team, slug=f"{tag}-p{p}")
        api = key_client(team, name=f"{tag}-k{p}", project=project, member=admin_member.membership)
        events = [event(f"{tag}-{p}-{i}", model=["gpt-5", "gpt-4o", "o3"][i % 3],
                        at=now - timedelta(days=i % 20, minutes=1)) for i in range(n_events)]  # fmt: skip
        post_usage(api, events)


@pytest.mark.parametrize("page_name", ["usage", "usage_export"])
def test_usage_pages_take_the_same_few_queries_for_3_or_600_events(
    team, owner, admin_member, key_client, django_assert_max_num_queries, page_name
):
    client = login(owner.user)
    url = reverse(f"ledger:{page_name}", args=[team.slug])
    counts = []
    for n_events, n_projects in ((3, 1), (200, 3)):
        _usage_at_scale(team, key_client, admin_member, n_events, n_projects)
        for group_by in ("model", "project", "member", "key"):
            with django_assert_max_num_queries(7) as captured:
                assert client.get(url, {"group_by": group_by}).status_code == 200
            counts.append(len(captured))
    assert len(set(counts)) == 1, counts  # the same queries whatever the number of rows


# ---- ledger history --------------------------------------------------------------------------


def test_history_lists_entries_newest_first_with_price_versions(team, owner, key_client):
    grant(team, 10)
    results = post_usage(key_client(team), [event("h1")])
    client = login(owner.user)
    response = client.get(reverse("ledger:history", args=[team.slug]))
    entries = response.context["page"].entries
    assert [e.kind for e in entries] == [EntryKind.USAGE, EntryKind.TOPUP]
    usage = entries[0]
    assert usage.balance_after_nano == 10 * 10**9 - int(credits_of(results) * 10**9)
    html = response.content.decode()
    assert f"gpt-5 v{results[0]['price']['version']}" in html
    assert "usage:" in html and "-1.125" in html  # the reference and the signed amount
    only_topups = client.get(reverse("ledger:history", args=[team.slug]), {"kind": "topup"})
    assert [e.kind for e in only_topups.context["page"].entries] == [EntryKind.TOPUP]


def test_history_pages_by_keyset_in_both_directions(team, owner):
    for _ in range(60):
        grant(team, 1)
    ids = list(
        LedgerEntry.objects.filter(team_id=team.id).order_by("-id").values_list("id", flat=True)
    )
    client = login(owner.user)
    url = reverse("ledger:history", args=[team.slug])
    first = client.get(url).context["page"]
    assert [e.id for e in first.entries] == ids[:50]
    assert first.has_older and not first.has_newer
    second = client.get(url, {"before": first.last_id}).context["page"]
    assert [e.id for e in second.entries] == ids[50:]
    assert second.has_newer and not second.has_older
    back = client.get(url, {"after": second.first_id}).context["page"]
    assert [e.id for e in back.entries] == ids[:50]
    assert client.get(url, {"before": "junk"}).context["page"].entries[0].id == ids[0]


def test_history_takes_the_same_few_queries_for_5_or_120_entries(
    team, owner, django_assert_max_num_queries
):
    client = login(owner.user)
    url = reverse("ledger:history", args=[team.slug])
    counts = []
    for n in (5, 115):
        for _ in range(n):
            grant(team, 1)
        with django_assert_max_num_queries(5) as captured:
            response = client.get(url)
        assert response.status_code == 200
        counts.append(len(captured))
        last = response.context["page"].last_id
        with django_assert_max_num_queries(6):
            assert client.get(url, {"before": last}).status_code == 200
    assert counts[0] == counts[1]


# ---- roles and tenancy -----------------------------------------------------------------------

READERS = {
    "usage": set(ROLES),
    "usage_export": set(ROLES),
    "history": {"owner", "admin", "finance"},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page_name", sorted(READERS))
def test_each_role_reads_what_it_may(request, team, page_name, role):
    persona = request.getfixturevalue(PERSONA_FIXTURE[role])
    response = login(persona.user).get(reverse(f"ledger:{page_name}", args=[team.slug]))
    if role in READERS[page_name]:
        assert response.status_code == 200
    else:
        assert response.status_code == 403
        assert b"Not allowed" in response.content


def test_a_member_sees_no_link_to_the_ledger(team, member, owner):
    nav = login(member.user).get(reverse("ledger:usage", args=[team.slug])).content.decode()
    assert reverse("ledger:history", args=[team.slug]) not in nav
    nav = login(owner.user).get(reverse("ledger:usage", args=[team.slug])).content.decode()
    assert reverse("ledger:history", args=[team.slug]) in nav


@pytest.mark.parametrize("page_name", sorted(READERS))
def test_outsiders_get_404_and_anonymous_visitors_the_login_page(
    team, outsider, client, page_name, scene
):
    url = reverse(f"ledger:{page_name}", args=[team.slug])
    assert login(outsider.user).get(url).status_code == 404
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")


def test_an_outsider_s_own_pages_show_nothing_of_the_team(scene, team, outsider):
    client = login(outsider.user)
    rows, _ = table(client, outsider.team)
    assert rows == {}
    history = client.get(reverse("ledger:history", args=[outsider.team.slug]))
    assert all(e.team_id == outsider.team.id for e in history.context["page"].entries)


def test_pages_only_answer_get(team, owner):
    client = login(owner.user)
    for page_name in READERS:
        assert client.post(reverse(f"ledger:{page_name}", args=[team.slug])).status_code == 405
