{#- The UTC calendar day of a timestamp, whatever the session's time zone. -#}
{% macro firepipe_utc_date(column) -%}
    {{ return(adapter.dispatch('firepipe_utc_date')(column)) }}
{%- endmacro %}

{% macro default__firepipe_utc_date(column) -%}
    cast(timezone('UTC', {{ column }}) as date)
{%- endmacro %}

{% macro snowflake__firepipe_utc_date(column) -%}
    to_date(convert_timezone('UTC', {{ column }}))
{%- endmacro %}
