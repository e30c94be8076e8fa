"""The BERT layout: BERT, RoBERTa, XLM-RoBERTa, CamemBERT and ELECTRA share it
(``<prefix>.encoder.layer[i]`` with ``attention.self``, ``intermediate.dense``, ``output.dense``),
and ONNX Runtime's optimizer fuses all of them as model type ``bert``."""

from presso.compress.arch.base import Adapter

BERT = Adapter(family="bert", model_types=("bert",))
ROBERTA = Adapter(family="roberta", model_types=("roberta", "xlm-roberta", "camembert"), positions_after_padding=True)
ELECTRA = Adapter(family="electra", model_types=("electra",))
