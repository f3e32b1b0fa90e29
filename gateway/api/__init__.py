"""The HTTP JSON API (aiohttp): versioned paths, OpenAPI from pydantic models, problem+json errors."""
