"""The NGSI-LD vocabulary every layer shares (ETSI GS CIM 009): the error types, the one time
format, and the query languages' syntax trees (q, geo-queries, type expressions).

It sits below everything else: the stores translate its trees to SQL, the hub and access
control raise its errors, and it imports nothing of Cidade's.
"""
