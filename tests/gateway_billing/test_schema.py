from django.core.management import call_command


def test_the_openapi_schema_is_valid_without_warnings(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    for path in ("/api/v1/usage", "/api/v1/authorize", "/api/v1/budgets", "/api/v1/models"):
        assert f"{path}:" in text
    assert "#/components/schemas/Error" in text
