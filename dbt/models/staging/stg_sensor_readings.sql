-- Silver readings with their UTC day, the columns the marts use, and nothing else.
select
    site_id,
    device_id,
    ts,
    {{ firepipe_utc_date('ts') }} as reading_date,
    source,
    is_gap,
    is_fire,
    temperature_c,
    smoke_obscuration_pct_per_m,
    co_ppm,
    co2_ppm
from {{ source('silver', 'sensor_readings') }}
