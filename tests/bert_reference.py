"""NumPy references for the BERT ports: Hugging Face's BertModel forward pass and BertTokenizer
(BasicTokenizer + WordPiece), written from the published algorithms, independent of keras-hub.
The tests of `bert_checkpoint.py` and `sentence_encoder.py` compare the ports against them."""
import unicodedata

import numpy as np
from scipy.special import erf


def _layer_norm(x, weight, bias, eps=1e-12):
  mean = x.mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * weight + bias


def reference_sequence_output(arrays, config, ids):
  """BERT's forward pass for one unpadded sequence, straight from the checkpoint arrays (float64,
  exact GELU), as Hugging Face's BertModel computes it."""
  n, heads = len(ids), config.num_heads
  size = config.hidden_dim // heads
  x = (arrays["embeddings.word_embeddings.weight"][ids]
       + arrays["embeddings.position_embeddings.weight"][:n]
       + arrays["embeddings.token_type_embeddings.weight"][0])
  x = _layer_norm(x, arrays["embeddings.LayerNorm.weight"], arrays["embeddings.LayerNorm.bias"])
  for i in range(config.num_layers):
    p = f"encoder.layer.{i}."
    linear = lambda v, key: v @ arrays[p + key + ".weight"].T + arrays[p + key + ".bias"]  # noqa
    split = lambda v: v.reshape(n, heads, size).transpose(1, 0, 2)  # noqa: E731
    q, k, v = (split(linear(x, f"attention.self.{name}")) for name in ("query", "key", "value"))
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(size)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    context = (weights @ v).transpose(1, 0, 2).reshape(n, -1)
    x = _layer_norm(x + linear(context, "attention.output.dense"),
                    arrays[p + "attention.output.LayerNorm.weight"],
                    arrays[p + "attention.output.LayerNorm.bias"])
    hidden = linear(x, "intermediate.dense")
    hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
    x = _layer_norm(x + linear(hidden, "output.dense"), arrays[p + "output.LayerNorm.weight"],
                    arrays[p + "output.LayerNorm.bias"])
  return x


def reference_embedding(arrays, config, ids):
  """sentence-transformers' all-MiniLM-L6-v2: mean pooling, then L2 normalisation."""
  pooled = reference_sequence_output(arrays, config, ids).mean(0)
  return pooled / np.linalg.norm(pooled)


def _is_punctuation(char):
  code = ord(char)
  if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
    return True
  return unicodedata.category(char).startswith("P")


def _is_cjk(code):
  return any(lo <= code <= hi for lo, hi in (
      (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
      (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def reference_tokenize(text, vocab):
  """uncased BERT: clean, split CJK, lower-case, strip accents, split punctuation, WordPiece."""
  text = "".join(f" {c} " if _is_cjk(ord(c)) else c for c in text
                 if ord(c) not in (0, 0xFFFD) and not unicodedata.category(c).startswith("C")
                 or c in "\t\n\r")
  words = []
  for token in text.lower().split():
    token = "".join(c for c in unicodedata.normalize("NFD", token)
                    if unicodedata.category(c) != "Mn")
    current = ""
    for char in token:
      if _is_punctuation(char):
        words += [current, char] if current else [char]
        current = ""
      else:
        current += char
    if current:
      words.append(current)
  ids = []
  for word in words:
    if len(word) > 100:  # Hugging Face's max_input_chars_per_word
      ids.append(vocab["[UNK]"])
      continue
    start, pieces = 0, []
    while start < len(word):
      end = len(word)
      while end > start:
        piece = ("##" if start else "") + word[start:end]
        if piece in vocab:
          break
        end -= 1
      if end == start:
        pieces = [vocab["[UNK]"]]
        break
      pieces.append(vocab[piece])
      start = end
    ids += pieces
  return ids
