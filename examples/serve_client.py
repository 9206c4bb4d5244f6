"""Use a running `cope serve --cascade` as a model: the OpenAI client (plain and streamed) and dspy.LM.

    export COPE_API_KEY=$(python -c "import secrets; print(secrets.token_urlsafe(24))")
    cope serve --cascade --small qwen2.5-coder-0.5b --large qwen2.5-coder-1.5b --api-key-env COPE_API_KEY &
    python examples/serve_client.py                      # --base-url http://127.0.0.1:8000/v1 by default

A server started without --api-key-env accepts any key (the OpenAI client insists on sending one).
"""

import argparse
import os

import dspy
from openai import OpenAI

parser = argparse.ArgumentParser()
parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
args = parser.parse_args()
key = os.environ.get("COPE_API_KEY", "no-key")

# The OpenAI client: the reply's usage covers every call the cascade made; `cope` says how it decided.
client = OpenAI(base_url=args.base_url, api_key=key)
raw = client.chat.completions.with_raw_response.create(
    model="cope", messages=[{"role": "user", "content": "What is 17 + 25?"}]
)
reply = raw.parse()
cope = reply.model_extra["cope"]
print(
    f"answer {reply.choices[0].message.content}: stage {cope['stage']}, {cope['calls']} calls, "
    f"{reply.usage.total_tokens} tokens, ${float(raw.headers['x-cope-cost-usd']):.6f}"
)

# Streamed: the decided answer arrives as chunks once the cascade has decided. Earlier turns are context.
stream = client.chat.completions.create(
    model="cope",
    stream=True,
    messages=[
        {"role": "system", "content": "Answer with a number only."},
        {"role": "user", "content": "What is 120 + 3?"},
    ],
)
print("streamed answer", "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))

# dspy.LM: the cascade as one LM of your DSPy program (its reply is the answer, as plain text).
lm = dspy.LM("openai/cope", api_base=args.base_url, api_key=key, cache=False)
print("dspy.LM answer", lm("What is 7 + 8?")[0])
