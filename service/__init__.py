"""The HTTP translation service: a thin Flask app over `translator.prediction.Translator`.

`service.app.create_app(config)` builds the app; gunicorn loads `service.wsgi:app` with
`service/gunicorn_conf.py` (`translator serve` starts it). The `translator` library never imports
this package. Nothing is imported here on purpose: gunicorn_conf must configure prometheus_client's
multiprocess mode before anything imports prometheus_client.
"""
