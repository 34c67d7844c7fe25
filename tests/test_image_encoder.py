"""The EfficientNet-Lite0 port: the .pth reader, the name mapping, parity with torch, real photos,
the in-graph preprocessing, bad images, and the SavedModel in a fresh process.

Oracle: torch (in the lock), running `tests/efficientnet_reference.TorchLite0`, a re-write of the
upstream forward pass loaded with `torch.load(..., strict=True)`; the preprocessing's oracle is a
numpy re-computation on pixels decoded by PIL. Photos: scikit-image's `skimage.data` files (the
raw bytes, so the JPEG is decoded as JPEG).
"""
import io
import os
import pathlib
import pickle

import numpy as np
import PIL.Image
import pytest
import skimage
import tensorflow as tf
import torch

from tests.efficientnet_reference import load_torch_lite0, numpy_preprocess, torch_outputs
from tests.saved_model_ops import graph_ops
from tests.saved_model_reload import serve_in_fresh_process
from trainer.encoders import efficientnet_checkpoint as E
from trainer.encoders.export import EMBEDDING, IMAGE_INPUT, LOGITS, VALID, export_image_encoder
from trainer.encoders.image_preprocessing import preprocess_images, preprocess_images_with_mask
from trainer.encoders.torch_pickle import read_state_dict

# Keras against torch, both float32 on the CPU: max |difference| of the logits and of the
# embedding (logits reach ~20, embedding values ~6).
LOGITS_ATOL = 1e-4
EMBEDDING_ATOL = 2e-5
# ImageNet-1k class indices the photo test checks, from the standard ILSVRC-2012 index list
# (the 1,000 synsets in sorted WordNet-id order); no class-name file ships offline.
CAT = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat",
       285: "Egyptian cat"}
COFFEE = {504: "coffee mug", 967: "espresso", 968: "cup"}
ROCKET = {657: "missile", 744: "projectile", 812: "space shuttle"}
CAMERA = {872: "tripod"}
MOTORBIKE = {665: "moped", 670: "motor scooter"}
PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "camera.png",
          "motorcycle_left.png", "no_time_for_that_tiny.gif")


@pytest.fixture(scope="module")
def state():
  return read_state_dict(E.weights_path())


@pytest.fixture(scope="module")
def keras_model():
  return E.load_image_encoder()


@pytest.fixture(scope="module")
def torch_model():
  return load_torch_lite0(E.weights_path())


@pytest.fixture(scope="module")
def photos():
  """name -> the file's bytes, from scikit-image's bundled data (no download)."""
  data_dir = pathlib.Path(skimage.__file__).parent / "data"
  return {name: (data_dir / name).read_bytes() for name in PHOTOS}


def _keras_outputs(model, pixels):
  out = model(pixels, training=False)
  return np.asarray(out["embedding"]), np.asarray(out["logits"])


def _encode(rgb, image_format):
  buffer = io.BytesIO()
  PIL.Image.fromarray(rgb).save(buffer, format=image_format)
  return buffer.getvalue()


def _decode(data):
  return np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGB"))


def test_reader_equals_torch_load(state):
  reference = torch.load(E.weights_path(), map_location="cpu")
  assert list(state) == list(reference)
  for key, tensor in reference.items():
    assert state[key].dtype == tensor.numpy().dtype, key
    np.testing.assert_array_equal(state[key], tensor.numpy(), err_msg=key)


def test_reader_refuses_code_and_other_formats(tmp_path):
  class Exploit:
    def __reduce__(self):
      return (os.system, ("true",))

  path = tmp_path / "evil.pth"
  with open(path, "wb") as f:
    for item in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, Exploit()):
      pickle.dump(item, f)
  with pytest.raises(pickle.UnpicklingError, match="refusing global"):
    read_state_dict(str(path))
  torch.save({"w": torch.zeros(2)}, tmp_path / "zip.pth")  # the format of torch >= 1.6
  with pytest.raises(ValueError, match="zip-format"):
    read_state_dict(str(tmp_path / "zip.pth"))


def test_mapping_covers_every_array_and_variable_once(state):
  model = E.build_efficientnet_lite0()
  mapping = E.weight_mapping(model)
  E.check_mapping(mapping, list(state), model)
  assert sorted(m.checkpoint_key for m in mapping) == sorted(state)
  used = [m.variable for m in mapping if m.variable is not None]
  assert len(used) == len(model.weights) == len({id(v) for v in used})
  dropped = {m.checkpoint_key for m in mapping if m.variable is None}
  assert dropped == {key for key in state if key.endswith("num_batches_tracked")}
  assert model.count_params() == sum(state[k].size for k in state if k not in dropped)
  assert model.count_params() == 4_694_024  # EfficientNet-Lite0 as published (4.7M)


def test_mapping_errors_name_the_offenders(state):
  model = E.build_efficientnet_lite0()
  mapping = E.weight_mapping(model)
  with pytest.raises(ValueError, match=r"not mapped: \['_extra.weight'\]"):
    E.check_mapping(mapping, list(state) + ["_extra.weight"], model)
  with pytest.raises(ValueError, match=r"absent from checkpoint: \['_fc.bias'\]"):
    E.check_mapping(mapping, [k for k in state if k != "_fc.bias"], model)
  with pytest.raises(ValueError, match=r"model variables not mapped: \['fc/bias'\]"):
    E.check_mapping([m for m in mapping if m.checkpoint_key != "_fc.bias"], list(state), model)
  with pytest.raises(ValueError, match="mapped twice"):
    E.check_mapping(mapping + mapping[:1], list(state), model)


def _assert_parity(keras_model, torch_model, pixels):
  k_embedding, k_logits = _keras_outputs(keras_model, pixels)
  t_embedding, t_logits = torch_outputs(torch_model, pixels)
  diffs = (float(np.abs(k_logits - t_logits).max()),
           float(np.abs(k_embedding - t_embedding).max()))
  print(f"max abs diff: logits {diffs[0]:.2e} (max |logit| {np.abs(t_logits).max():.1f}), "
        f"embedding {diffs[1]:.2e}")
  assert diffs[0] < LOGITS_ATOL and diffs[1] < EMBEDDING_ATOL
  np.testing.assert_array_equal(k_logits.argmax(1), t_logits.argmax(1))


def test_parity_with_torch_on_random_inputs(keras_model, torch_model):
  pixels = np.random.default_rng(0).uniform(-1, 1, (4, 224, 224, 3)).astype(np.float32)
  _assert_parity(keras_model, torch_model, pixels)


def test_parity_with_torch_on_photos(keras_model, torch_model, photos):
  _assert_parity(keras_model, torch_model, preprocess_images(tf.constant(list(photos.values())))
                 .numpy())


def test_symmetric_padding_would_be_another_model(torch_model, photos):
  """Guards the padding choice: torch's usual padding=k//2 changes the outputs visibly."""
  pixels = preprocess_images(tf.constant([photos["chelsea.png"], photos["rocket.jpg"]])).numpy()
  _, same = torch_outputs(torch_model, pixels)
  _, symmetric = torch_outputs(load_torch_lite0(E.weights_path(), symmetric=True), pixels)
  assert np.abs(symmetric - same).max() > 0.1


def test_photos_get_sensible_imagenet_classes(keras_model, photos):
  logits = _keras_outputs(keras_model, preprocess_images(tf.constant(list(photos.values()))))[1]
  top5 = {name: list(np.argsort(-logits[i])[:5]) for i, name in enumerate(photos)}
  print("top-5:", {name: [int(c) for c in classes] for name, classes in top5.items()})
  assert top5["chelsea.png"][0] in CAT
  assert top5["coffee.png"][0] in COFFEE
  assert set(top5["rocket.jpg"]) & set(ROCKET)
  assert top5["camera.png"][0] in CAMERA  # a greyscale PNG, read as 3 channels
  assert top5["motorcycle_left.png"][0] in MOTORBIKE
  # astronaut.png is not checked: ImageNet-1k has no astronaut or space-suit class (its top-1
  # is 560, football helmet).


def test_preprocessing_matches_the_numpy_recipe(photos):
  synthetic = np.random.default_rng(1).integers(0, 256, (301, 457, 3), dtype=np.uint8)
  jpeg = _encode(synthetic, "JPEG")
  cases = {  # name -> (bytes, pixels decoded without TF)
      "png, odd size": (_encode(synthetic, "PNG"), synthetic),
      "bmp": (_encode(synthetic, "BMP"), synthetic),
      "png photo": (photos["chelsea.png"], _decode(photos["chelsea.png"])),
      "gif, first frame": (photos["no_time_for_that_tiny.gif"],
                           _decode(photos["no_time_for_that_tiny.gif"])),
      "jpeg photo": (photos["rocket.jpg"], _decode(photos["rocket.jpg"])),  # PIL: same IDCT
      "jpeg": (jpeg, _decode(jpeg)),
  }
  got = preprocess_images(tf.constant([data for data, _ in cases.values()])).numpy()
  assert got.shape == (len(cases), 224, 224, 3) and got.dtype == np.float32
  for row, (name, (_, rgb)) in enumerate(cases.items()):
    np.testing.assert_allclose(got[row], numpy_preprocess(rgb), atol=1e-4, err_msg=name)


def test_bad_images_are_marked_invalid_and_the_batch_survives(photos):
  png, jpeg = photos["chelsea.png"], photos["rocket.jpg"]
  bmp = _encode(_decode(png), "BMP")
  tiny = _encode(np.full((1, 1, 3), 200, np.uint8), "PNG")  # crops to 1 pixel, not 0
  corrupt = bytearray(png)
  corrupt[len(png) // 2:len(png) // 2 + 64] = b"\0" * 64
  batch = {"jpeg": (jpeg, True), "empty": (b"", False), "text": (b"<html>404</html>", False),
           "tiff": (b"II*\0" + b"\0" * 64, False), "png cut": (png[:len(png) // 2], False),
           "jpeg cut": (jpeg[:len(jpeg) // 2], False), "png bad crc": (bytes(corrupt), False),
           "bmp trailing byte": (bmp + b"x", False), "gif header": (b"GIF89a" + b"\0" * 10, False),
           "png": (png, True), "bmp": (bmp, True), "png 1x1": (tiny, True)}
  pixels, valid = preprocess_images_with_mask(tf.constant([data for data, _ in batch.values()]))
  assert valid.numpy().tolist() == [ok for _, ok in batch.values()]
  good = preprocess_images(tf.constant([jpeg, png, bmp, tiny])).numpy()
  np.testing.assert_array_equal(pixels.numpy()[valid.numpy()], good)
  assert not pixels.numpy()[~valid.numpy()].any()
  with pytest.raises(tf.errors.InvalidArgumentError):
    preprocess_images(tf.constant([jpeg, b"junk"]))  # the strict variant fails the batch
  _, none_valid = preprocess_images_with_mask(tf.constant([b"junk", b""]))
  assert none_valid.numpy().tolist() == [False, False]
  empty, _ = preprocess_images_with_mask(tf.constant([], tf.string))
  assert empty.shape == (0, 224, 224, 3)


def test_saved_model_serves_raw_bytes_in_a_fresh_process(keras_model, photos, tmp_path):
  export_dir = str(tmp_path / "image_encoder")
  export_image_encoder(keras_model, export_dir)
  variables = sum(f.stat().st_size for f in (tmp_path / "image_encoder" / "variables").iterdir())
  assert variables < 1.1 * os.path.getsize(E.weights_path())  # each weight stored once
  inputs = [photos["chelsea.png"], b"not an image", photos["rocket.jpg"], photos["coffee.png"]]
  serve = tf.saved_model.load(export_dir).signatures["serving_default"]
  here = {k: v.numpy() for k, v in serve(**{IMAGE_INPUT: tf.constant(inputs)}).items()}
  assert here[VALID].tolist() == [True, False, True, True]
  assert here[EMBEDDING].shape == (4, E.EMBEDDING_DIM) and not here[EMBEDDING][1].any()
  _, direct = _keras_outputs(keras_model, preprocess_images(tf.constant(inputs[2:])))
  np.testing.assert_allclose(here[LOGITS][2:], direct, atol=1e-5)
  tf2, tf1, imported = serve_in_fresh_process(export_dir, IMAGE_INPUT, inputs, tmp_path)
  assert imported == "IMPORTED []", imported  # no torch, no project code
  for name, there in (("tf2", tf2), ("tf1 session", tf1)):
    assert set(there) == set(here), name
    for key, value in here.items():
      np.testing.assert_array_equal(there[key], value, err_msg=f"{name}: {key}")
  ops = graph_ops(export_dir)
  assert ops <= set(dir(tf.raw_ops)), ops - set(dir(tf.raw_ops))  # stock TF only
  assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
