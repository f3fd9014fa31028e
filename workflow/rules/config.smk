# The resolved config, saved next to the results (every key, defaults filled in).


rule save_config:
    output:
        results("config.yaml"),
    log:
        logs("save_config.log"),
    benchmark:
        benchmarks("save_config.tsv")
    conda:
        "../../envs/sim.yaml"
    threads: 1
    resources:
        mem_mb=500,
    params:
        cfg=json.dumps(config, sort_keys=True),
    shell:
        "positrongan config --config-json {params.cfg:q} --out {output} > {log} 2>&1"
