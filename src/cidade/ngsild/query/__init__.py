"""NGSI-LD query language (q) and geo-queries.

Parsed to trees, evaluated in memory or translated to SQL.
"""
