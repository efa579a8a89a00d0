# %% [markdown]
# # vbatch from Python, notebook style
#
# Each `# %%` block is a cell (VS Code, Jupyter with jupytext, or `python examples/from_python.py`).
# One vLLM server with the embedded default model is started once and used by every call.

# %%
import pandas as pd

import vbatch

server = vbatch.Server(max_model_len=512).start()  # minutes the first time on a CPU

# %% A list of prompts in, records out, in input order
records = vbatch.generate(
    ["Why is the sky blue?", "Name three prime numbers.", "Say hello in French."],
    base_url=server.url, max_tokens=48,
)
for record in records:
    print(record["index"], record["status"], repr(record["text"][:60]))

# %% A DataFrame in, the same DataFrame with result columns out
questions = pd.DataFrame(
    {"question": ["What is 2 + 2?", "What colour is grass?"], "topic": ["maths", "nature"]},
    index=["q1", "q2"],
)
answers = vbatch.generate(questions, prompt_field="question", base_url=server.url,
                          max_tokens=24, cache="answers.jsonl")  # rerun: nothing is sent again
print(answers[["topic", "status", "text", "completion_tokens"]])

# %% Read the cache back as a table
print(pd.read_json("answers.jsonl", lines=True)[["id", "status", "text"]])

# %%
server.stop()
