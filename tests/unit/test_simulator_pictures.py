"""The upstream simulator's pictures: real files of the size and format asked, different for different prompts,
and the same for the same prompt, though the backdrop every picture of a size shares is made once."""

from __future__ import annotations

import io

from PIL import Image, ImageChops

from functions.upstream_simulator.simulator.rendering import render_image

draw = render_image.__wrapped__  # past the cache of finished files: each call draws


def _opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_a_picture_is_a_real_file_of_the_size_and_format_asked() -> None:
    for output_format, pil_format in (("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")):
        image = _opened(draw(640, 480, output_format, None, "a lighthouse"))
        assert (image.format, image.size, image.mode) == (pil_format, (640, 480), "RGB")


def test_prompts_give_different_pictures_and_a_prompt_the_same_one_again() -> None:
    first = draw(320, 200, "png", None, "a lighthouse")
    other = draw(320, 200, "png", None, "a harbour")
    again = draw(320, 200, "png", None, "a lighthouse")  # after another picture drawn on the same backdrop

    assert again == first
    difference = ImageChops.difference(_opened(first), _opened(other)).getbbox()
    assert difference is not None
    # the file compresses like a photograph, not like flat colour: well over a byte a pixel
    assert len(first) > 320 * 200
