# Positron image features (PCA or PCANet) of the training split: the attention memory.


rule extract_features:
    input:
        dataset=results("dataset", "positron.npz"),
    output:
        features=results("features", "positron_features.npz"),
    log:
        logs("extract_features/extract_features.log"),
    benchmark:
        benchmarks("extract_features/extract_features.tsv")
    conda:
        "../../envs/torch.yaml"
    threads: capped_threads(1)
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cfg=cfg_json("features"),
    shell:
        "positrongan extract-features --config-json {params.cfg:q} --threads {threads} "
        "--dataset {input.dataset} --out {output.features} > {log} 2>&1"


TARGETS["features"] = [results("features", "positron_features.npz")]
