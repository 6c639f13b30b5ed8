"""The scoring service of `pipeline serve`: the ASGI app (`pipeline.serve.app`, FastAPI) and its page."""
