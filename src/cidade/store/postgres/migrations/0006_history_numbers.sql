-- The number a Property instance holds, beside the instance, so aggregations read numbers
-- instead of the whole instance: as float8, with whether it was written as an integer (JSON 5 is
-- not 5.0). Integers are kept only below 2^53, where float8 holds them exactly.
ALTER TABLE attr_history ADD COLUMN num DOUBLE PRECISION, ADD COLUMN num_int BOOLEAN;
UPDATE attr_history
   SET num = (instance ->> 'value')::float8,
       num_int = (instance ->> 'value') !~ '[.eE]'
 WHERE instance ->> 'type' = 'Property' AND jsonb_typeof(instance -> 'value') = 'number'
   AND ((instance ->> 'value') ~ '[.eE]' OR abs((instance ->> 'value')::numeric) < 9007199254740992)
   AND NOT ((instance ->> 'value') LIKE '-%' AND (instance ->> 'value')::float8 = 0);
