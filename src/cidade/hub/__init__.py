"""The NGSI-LD context hub (ETSI GS CIM 009 v1.8)."""
