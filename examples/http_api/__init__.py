"""The bank example as a small HTTP API on eskit's asyncio front end: see README.md here.

``examples.http_api.app.create_app()`` builds the Starlette app;
``examples.http_api.app.app`` is one configured from the environment.
"""
