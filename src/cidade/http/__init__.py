"""HTTP helpers every API of Cidade shares (the hub, access control, devices): media types,
reading bodies with a size cap, responses built from bytes, ProblemDetails errors, and the
ASGI middleware that reads query strings as RFC 3986 does.

It knows HTTP and the NGSI-LD error vocabulary (``cidade.ngsild``), nothing of the hub: the
NGSI-LD specifics (@context, representations, paging) stay in ``cidade.hub.http``.
"""
