# positrongan: simulate -> reconstruct -> dataset -> CT prior -> GAN -> evaluate.
# Options live in config/config.yaml (schema: workflow/schemas/config.schema.yaml).


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/config.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/reconstruct.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/ct.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/enhance.smk"
include: "workflow/rules/detect.smk"


rule all:
    default_target: True
    input:
        all_targets(),
