-- The number a Property instance holds, beside the instance, so aggregations read numbers
-- instead of the whole instance. jsonb keeps 5 and 5.0 apart, as the instance does.
ALTER TABLE attr_history ADD COLUMN num JSONB;
UPDATE attr_history SET num = instance -> 'value'
 WHERE instance ->> 'type' = 'Property' AND jsonb_typeof(instance -> 'value') = 'number';
