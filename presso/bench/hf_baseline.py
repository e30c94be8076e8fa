"""The baseline users write first: a FastAPI endpoint calling a Hugging Face ``pipeline`` on the fp32
PyTorch model, one request at a time. ``POST /ner`` (token classification) or ``POST /classify``
(text classification) with ``{"text": ...}`` or ``{"texts": [...]}``.

Run as its own process: ``python -m presso.bench.hf_baseline --model DIR --tokenizer DIR --port N
[--task text-classification]``.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI
from pydantic import BaseModel

TASKS = ("token-classification", "text-classification")


class Body(BaseModel):
    text: str | None = None
    texts: list[str] | None = None

    def items(self) -> list[str]:
        return self.texts if self.texts is not None else [self.text or ""]


def create_app(model_dir: str, tokenizer_dir: str, task: str = "token-classification") -> FastAPI:
    """The app for ``task`` (one of :data:`TASKS`).

    Raises:
        ValueError: another task.
    """
    from transformers import pipeline

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    app = FastAPI(title="Hugging Face pipeline baseline")

    @app.get("/health/ready")
    def ready():
        return {"status": "ready"}

    if task == "token-classification":
        ner = pipeline(task, model=model_dir, tokenizer=tokenizer_dir, aggregation_strategy="simple", device=-1)

        @app.post("/ner")
        def predict(body: Body):  # a plain `def`: FastAPI runs it in its thread pool
            results = [{"entities": [{"label": e["entity_group"], "text": text[e["start"]:e["end"]],
                                      "start": int(e["start"]), "end": int(e["end"]), "score": float(e["score"])}
                                     for e in ner(text)]} for text in body.items()]
            return results[0] if body.texts is None else {"results": results}
        return app

    classifier = pipeline(task, model=model_dir, tokenizer=tokenizer_dir, device=-1)

    @app.post("/classify")
    def classify(body: Body):
        results = [{"label": r["label"], "score": float(r["score"])} for r in classifier(body.items())]
        return results[0] if body.texts is None else {"results": results}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="Hugging Face model directory (fp32 PyTorch)")
    parser.add_argument("--tokenizer", required=True, help="directory with the tokenizer files")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--task", choices=TASKS, default="token-classification")
    args = parser.parse_args()
    uvicorn.run(create_app(args.model, args.tokenizer, args.task), host="127.0.0.1", port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
