-- Devices (devices/): the IoT agent's service groups and devices, each a JSON document beside
-- the columns it is looked up by. A group is found by its apikey and resource alone (a device's
-- messages carry no tenant), so that pair is unique across tenants.
CREATE TABLE IF NOT EXISTS service_groups (
    tenant TEXT NOT NULL,
    apikey TEXT NOT NULL,
    resource TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant, apikey, resource)
);
CREATE UNIQUE INDEX IF NOT EXISTS service_groups_route ON service_groups(apikey, resource);

CREATE TABLE IF NOT EXISTS devices (
    tenant TEXT NOT NULL,
    device_id TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant, device_id)
);
