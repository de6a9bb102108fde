"""Without the web extra, eskit.web and `eskit serve` name the extra to install."""

from tests.test_extras import run_without


def test_eskit_web_without_its_extra_names_the_web_extra():
    result = run_without(("fastapi",), """
        import eskit
        try:
            import eskit.web
        except eskit.MissingExtraError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "pip install 'eskit[web]'" in result.stdout


def test_eskit_serve_without_the_web_extra_exits_1_with_the_hint(tmp_path):
    db = tmp_path / "shop.db"
    result = run_without(("fastapi", "uvicorn"), f"""
        import sys
        import eskit
        eskit.SQLiteEventStore({str(db)!r}).close()
        sys.argv = ["eskit", "serve", {str(db)!r}]
        from eskit.cli import main
        main()
    """)
    assert result.returncode == 1, result.stderr
    assert "pip install 'eskit[web]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_eskit_web_exports_exactly_its_pinned_names():
    import eskit.web

    assert sorted(eskit.web.__all__) == [
        "DEFAULT_MAX_REQUEST_BYTES", "WebSettings", "create_app", "stop_event_streams"]
    assert all(hasattr(eskit.web, name) for name in eskit.web.__all__)
