-- The number a Property instance holds, beside the instance, so aggregations read numbers
-- instead of parsing JSON. No declared type: SQLite keeps integers integers and reals reals.
ALTER TABLE attr_history ADD COLUMN num;
UPDATE attr_history SET num = json_extract(instance, '$.value')
 WHERE json_extract(instance, '$.type') = 'Property'
   AND json_type(instance, '$.value') IN ('integer', 'real');
