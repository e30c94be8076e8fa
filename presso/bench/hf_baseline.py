"""Baseline (C) of the serve benchmark: what users write first, a FastAPI endpoint calling a
Hugging Face ``pipeline`` on the fp32 PyTorch model, one request at a time.

Run as its own process: ``python -m presso.bench.hf_baseline --model DIR --tokenizer DIR --port N``.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI
from pydantic import BaseModel


class Body(BaseModel):
    text: str


def create_app(model_dir: str, tokenizer_dir: str) -> FastAPI:
    from transformers import pipeline

    ner = pipeline("token-classification", model=model_dir, tokenizer=tokenizer_dir,
                   aggregation_strategy="simple", device=-1)
    app = FastAPI(title="Hugging Face pipeline baseline")

    @app.post("/ner")
    def predict(body: Body):  # a plain `def`: FastAPI runs it in its thread pool
        return {"entities": [{"label": e["entity_group"], "text": body.text[e["start"]:e["end"]],
                              "start": int(e["start"]), "end": int(e["end"]), "score": float(e["score"])}
                             for e in ner(body.text)]}

    @app.get("/health/ready")
    def ready():
        return {"status": "ready"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="Hugging Face model directory (fp32 PyTorch)")
    parser.add_argument("--tokenizer", required=True, help="directory with the tokenizer files")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model, args.tokenizer), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
