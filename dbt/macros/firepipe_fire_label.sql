{#- What a reading's is_fire label says: fire, no_fire, or unlabelled (field data). -#}
{% macro firepipe_fire_label(column) -%}
    case
        when {{ column }} then 'fire'
        when not {{ column }} then 'no_fire'
        else 'unlabelled'
    end
{%- endmacro %}
