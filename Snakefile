# positrongan: simulate -> reconstruct -> dataset -> CT prior -> GAN -> evaluate.
# Options live in config/config.yaml (schema: workflow/schemas/config.schema.yaml).


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


rule all:
    input:
        all_targets(),
    default_target: True
