-- One row per alarm: the second a device's reading first crosses the smoke or the heat
-- threshold after a reading below both. Gap rows carry no reading and are skipped, so an alarm
-- that resumes after a gap is the same alarm.
with readings as (
    select
        site_id,
        device_id,
        ts,
        reading_date,
        is_fire,
        coalesce(
            smoke_obscuration_pct_per_m >= {{ var('smoke_alarm_obscuration_pct_per_m') }}, false
        ) as smoke_alarm,
        coalesce(temperature_c >= {{ var('heat_alarm_temperature_c') }}, false) as heat_alarm
    from {{ ref('stg_sensor_readings') }}
    where not is_gap
),

flagged as (
    select
        *,
        smoke_alarm or heat_alarm as in_alarm,
        lag(smoke_alarm or heat_alarm) over (partition by device_id order by ts) as was_in_alarm
    from readings
)

select
    site_id,
    device_id,
    ts as alarm_at,
    reading_date,
    is_fire,
    smoke_alarm,
    heat_alarm
from flagged
where in_alarm and not coalesce(was_in_alarm, false)
