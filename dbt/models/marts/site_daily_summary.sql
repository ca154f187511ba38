-- One row per site and UTC day: how much the site reported, how much it missed, and the
-- extremes of its heat and smoke channels.
select
    site_id,
    reading_date,
    count(*) as device_seconds,
    sum(case when is_gap then 0 else 1 end) as readings,
    sum(case when is_gap then 1 else 0 end) as gap_seconds,
    cast(sum(case when is_gap then 1 else 0 end) as double precision) / count(*) as gap_share,
    count(distinct device_id) as devices,
    count(distinct case when is_fire then device_id end) as fire_devices,
    avg(temperature_c) as mean_temperature_c,
    max(temperature_c) as max_temperature_c,
    max(smoke_obscuration_pct_per_m) as max_smoke_obscuration_pct_per_m,
    max(co_ppm) as max_co_ppm,
    avg(co2_ppm) as mean_co2_ppm,
    min(ts) as first_reading_at,
    max(ts) as last_reading_at
from {{ ref('stg_sensor_readings') }}
group by site_id, reading_date
