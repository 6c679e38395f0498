"""The platform's OpenAPI 3.1 document (docs/api/openapi.md), served at GET /openapi.json."""

from cidade.openapi.document import PARTS, build_document, document_bytes, openapi_route

__all__ = ["PARTS", "build_document", "document_bytes", "openapi_route"]
