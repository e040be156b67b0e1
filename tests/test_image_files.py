import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from segdemo.image_files import ImageError, check_same_size, read_image, read_label_map


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A few-KB PNG that claims width × height pixels (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit gray
    rows = zlib.compress(b"\x00" * (width // 8 + 2) * 16, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def rgb(height=20, width=30):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_reads_paths_bytes_files_and_upload_dicts(tmp_path):
    data = encode(Image.fromarray(rgb()), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    for source in (path, str(path), data, io.BytesIO(data), {"path": str(path)}):
        out = read_image(source)
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8
        assert np.array_equal(out, rgb())


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (np.random.default_rng(1).bytes(5000), "not an image"),
])
def test_empty_and_random_bytes_are_refused(tmp_path, data, message):
    path = tmp_path / "broken.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=message):
        read_image(path)


def test_truncated_jpeg_is_refused():
    data = encode(Image.fromarray(rgb(200, 200)), "JPEG")
    with pytest.raises(ImageError, match="truncated|decoded"):
        read_image(data[: len(data) // 2])


def test_one_pixel_image_is_read():
    out = read_image(encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"))
    assert out.shape == (1, 1, 3) and out[0, 0].tolist() == [9, 8, 7]


def test_sixteen_bit_tiff_is_rescaled():
    values = np.linspace(0, 4000, 64 * 32).reshape(32, 64).astype(np.uint16)
    out = read_image(encode(Image.fromarray(values), "TIFF"))
    assert out.shape == (32, 64, 3) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255


def test_cmyk_jpeg_becomes_rgb():
    out = read_image(encode(Image.new("CMYK", (10, 8), (0, 255, 255, 0)), "JPEG"))
    assert out.shape == (8, 10, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60  # red


def test_rgba_is_composited_on_white():
    image = np.zeros((4, 4, 4), dtype=np.uint8)
    image[..., 0] = 255
    image[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    out = read_image(encode(Image.fromarray(image, mode="RGBA"), "PNG"))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[3, 3].tolist() == [255, 255, 255]


def test_palette_and_animated_gif_give_the_first_frame():
    frames = [Image.new("P", (12, 10), color) for color in (1, 2, 3)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (768 - 12))
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = read_image(data)
    assert out.shape == (10, 12, 3) and out[0, 0].tolist() == [255, 0, 0]


def test_multipage_tiff_gives_the_first_page():
    pages = [Image.new("RGB", (6, 5), color) for color in ((1, 2, 3), (200, 100, 50))]
    out = read_image(encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    assert out[0, 0].tolist() == [1, 2, 3]


def test_exif_orientation_is_applied():
    image = Image.fromarray(rgb(10, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    out = read_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert out.shape == (20, 10, 3)


def test_decompression_bomb_is_refused_from_its_header():
    data = png_header_only(30000, 30000)
    assert len(data) < 20000
    with pytest.raises(ImageError, match="megapixels"):
        read_image(data)


@pytest.mark.slow
def test_an_8000_by_6000_photo_is_accepted():
    photo = Image.new("RGB", (8000, 6000), (10, 120, 200))
    out = read_image(encode(photo, "JPEG", quality=70))
    assert out.shape == (6000, 8000, 3)


def test_zero_sized_arrays_and_wrong_channel_counts_are_refused():
    with pytest.raises(ImageError):
        read_image(np.zeros((0, 5, 3), dtype=np.uint8))
    with pytest.raises(ImageError):
        read_image(np.zeros((5, 5, 7), dtype=np.uint8))


def test_mask_of_another_size_names_both_sizes():
    with pytest.raises(ImageError, match=r"40×30.*64×48"):
        check_same_size(np.zeros((48, 64, 3)), np.zeros((30, 40)), "mask")


def test_label_maps_read_palette_indices_directly():
    labels = np.array([[0, 1, 15], [255, 20, 0]], dtype=np.uint8)
    image = Image.fromarray(labels, mode="P")
    image.putpalette(list(range(256)) * 3)
    assert np.array_equal(read_label_map(encode(image, "PNG")), labels)
    assert np.array_equal(read_label_map(encode(Image.fromarray(labels), "PNG")), labels)


def test_color_masks_map_to_the_nearest_palette_color():
    palette = [(0, 0, 0), (200, 0, 0), (0, 0, 200)]
    color = np.array([[[0, 0, 0], [198, 3, 1]], [[0, 2, 190], [200, 0, 0]]], dtype=np.uint8)
    labels = read_label_map(encode(Image.fromarray(color), "PNG"), palette=palette)
    assert labels.tolist() == [[0, 1], [2, 1]]
    with pytest.raises(ImageError, match="color"):
        read_label_map(encode(Image.fromarray(color), "PNG"))
