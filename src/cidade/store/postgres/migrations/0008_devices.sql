-- Devices (devices/): the IoT agent's service groups and devices, each a jsonb document beside
-- the columns it is looked up by. A group is found by its apikey and resource alone (a device's
-- messages carry no tenant), so that pair is unique across tenants. Keys compare bytewise
-- (COLLATE "C"), in the same order as on SQLite.
CREATE TABLE service_groups (
    tenant TEXT COLLATE "C" NOT NULL,
    apikey TEXT COLLATE "C" NOT NULL,
    resource TEXT COLLATE "C" NOT NULL,
    doc JSONB NOT NULL,
    PRIMARY KEY (tenant, apikey, resource)
);
CREATE UNIQUE INDEX service_groups_route ON service_groups(apikey, resource);

CREATE TABLE devices (
    tenant TEXT COLLATE "C" NOT NULL,
    device_id TEXT COLLATE "C" NOT NULL,
    doc JSONB NOT NULL,
    PRIMARY KEY (tenant, device_id)
);
