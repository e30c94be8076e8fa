"""What the pipeline and the service share: the artifact contract (:mod:`.manifest`), the
tokenizer wrapper (:mod:`.encoding`, :mod:`.casing`), pure post-processing (:mod:`.spans`,
:mod:`.classification`), reference outputs (:mod:`.reference`) and the ONNX Runtime session
(:mod:`.runtime`). It imports nothing from ``presso.compress``, ``presso.service`` or the CLI."""
