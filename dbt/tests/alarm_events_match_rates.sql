{{ config(meta={'dagster': {'ref': {'name': 'site_daily_alarm_rates'}}}) }}

-- Every alarm event is counted in exactly one row of the rates.
select
    (select count(*) from {{ ref('device_alarm_events') }}) as events,
    (select sum(alarm_events) from {{ ref('site_daily_alarm_rates') }}) as counted
where (select count(*) from {{ ref('device_alarm_events') }})
    <> coalesce((select sum(alarm_events) from {{ ref('site_daily_alarm_rates') }}), 0)
