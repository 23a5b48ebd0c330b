"""Makes the sample images the documentation's examples send: ``sofa.png`` (a room with a sofa, 1024x1024),
``sofa-mask.png`` (the same size, transparent over the sofa's cushions: the part an edit may change) and
``photo.jpg`` (a lighthouse on a cliff, 1024x768). Drawn with Pillow from fixed shapes, so the files come out the
same on every run; they are committed with this script.

    .venv/bin/python examples/make_samples.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SIZE = 1024
CUSHIONS = (232, 520, 792, 640)  # the box the mask opens, on the sofa's seat


def vertical_gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    height = size[1]
    column = Image.new("RGB", (1, height))
    for y in range(height):
        t = y / (height - 1)
        column.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    return column.resize(size)


def sofa() -> Image.Image:
    room = vertical_gradient((SIZE, SIZE), (236, 226, 208), (214, 200, 178))
    draw = ImageDraw.Draw(room)
    draw.rectangle((0, 760, SIZE, SIZE), fill=(150, 110, 80))  # floor
    draw.rectangle((640, 160, 880, 380), fill=(90, 130, 170), outline=(60, 60, 60), width=12)  # a picture
    draw.rounded_rectangle((180, 400, 844, 560), radius=40, fill=(52, 96, 120))  # back
    draw.rounded_rectangle((140, 500, 884, 700), radius=36, fill=(60, 110, 138))  # seat
    draw.rounded_rectangle((120, 460, 240, 700), radius=30, fill=(46, 86, 108))  # arms
    draw.rounded_rectangle((784, 460, 904, 700), radius=30, fill=(46, 86, 108))
    draw.rounded_rectangle(CUSHIONS, radius=20, fill=(70, 124, 152))
    for x in (200, 804):  # legs
        draw.rectangle((x, 700, x + 20, 760), fill=(60, 40, 30))
    return room


def mask() -> Image.Image:
    """Opaque everywhere but the cushions: transparent pixels mark what an edit may change."""
    alpha = Image.new("L", (SIZE, SIZE), 255)
    ImageDraw.Draw(alpha).rounded_rectangle(CUSHIONS, radius=20, fill=0)
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 255))
    image.putalpha(alpha)
    return image


def photo() -> Image.Image:
    width, height = 1024, 768
    scene = vertical_gradient((width, height), (250, 196, 150), (120, 160, 210))
    draw = ImageDraw.Draw(scene)
    draw.ellipse((120, 120, 260, 260), fill=(255, 230, 170))  # sun
    draw.rectangle((0, 560, width, height), fill=(40, 80, 130))  # sea
    draw.polygon([(520, 560), (600, 420), (1024, 400), (1024, 768), (480, 768)], fill=(90, 110, 70))  # cliff
    draw.polygon([(760, 410), (800, 410), (792, 220), (768, 220)], fill=(240, 240, 235))  # tower
    for y in (260, 320, 380):
        draw.rectangle((766, y, 794, y + 20), fill=(200, 40, 40))
    draw.rectangle((762, 196, 798, 222), fill=(250, 220, 90))  # lamp
    return scene


def main() -> None:
    sofa().save(HERE / "sofa.png", optimize=True)
    mask().save(HERE / "sofa-mask.png", optimize=True)
    photo().save(HERE / "photo.jpg", quality=85)
    for name in ("sofa.png", "sofa-mask.png", "photo.jpg"):
        print(name, (HERE / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
