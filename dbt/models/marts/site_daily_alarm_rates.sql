-- Alarms per 1,000 device-hours by site, UTC day and label: alarms of devices in a fire
-- (fire), of devices without one (no_fire: false alarms) and of unlabelled field devices.
with exposure as (
    select
        site_id,
        reading_date,
        {{ firepipe_fire_label('is_fire') }} as label,
        count(distinct device_id) as devices,
        count(*) * {{ var('seconds_per_reading') }} / 3600.0 as device_hours
    from {{ ref('stg_sensor_readings') }}
    -- Gap rows are no exposure, and silver leaves their is_fire null.
    where not is_gap
    group by site_id, reading_date, {{ firepipe_fire_label('is_fire') }}
),

alarms as (
    select
        site_id,
        reading_date,
        {{ firepipe_fire_label('is_fire') }} as label,
        count(*) as alarm_events,
        sum(case when smoke_alarm then 1 else 0 end) as smoke_alarm_events,
        sum(case when heat_alarm then 1 else 0 end) as heat_alarm_events
    from {{ ref('device_alarm_events') }}
    group by site_id, reading_date, {{ firepipe_fire_label('is_fire') }}
)

select
    e.site_id,
    e.reading_date,
    e.label,
    e.devices,
    e.device_hours,
    coalesce(a.alarm_events, 0) as alarm_events,
    coalesce(a.smoke_alarm_events, 0) as smoke_alarm_events,
    coalesce(a.heat_alarm_events, 0) as heat_alarm_events,
    1000.0 * coalesce(a.alarm_events, 0) / e.device_hours as alarms_per_1000_device_hours
from exposure as e
left join alarms as a
    on e.site_id = a.site_id
    and e.reading_date = a.reading_date
    and e.label = a.label
