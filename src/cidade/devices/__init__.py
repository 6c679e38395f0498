"""Devices: sensors and actuators through MQTT or HTTP, compatible with the FIWARE IoT Agent
for JSON (topics, payloads, provisioning API), mapped onto the hub's entities (docs/devices.md)."""
