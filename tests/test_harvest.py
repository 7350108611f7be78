"""harvest: prompts from A1111 and ComfyUI PNG chunks and from JPEG/WebP EXIF UserComment."""
import json

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from prompt_expander.data.harvest import EXIF_IFD, USER_COMMENT, harvest, image_prompts, split_a1111_parameters

A1111 = ("portrait of a woman, (detailed:1.2), <lora:film:0.6>\nsecond line\n"
         "Negative prompt: blurry, lowres\n"
         "Steps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 123, Size: 512x512, Model: sd15")
COMFY = {
    "3": {"class_type": "KSampler", "inputs": {"positive": ["6", 0], "negative": ["7", 0], "seed": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle on a hill, 8k", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly", "clip": ["4", 1]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
}


def png(path, **chunks):
    info = PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def with_exif(path, comment: bytes, fmt):
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = comment
    Image.new("RGB", (8, 8)).save(path, format=fmt, exif=exif)
    return path


def test_split_a1111_parameters():
    assert split_a1111_parameters(A1111) == ("portrait of a woman, (detailed:1.2), <lora:film:0.6>\nsecond line",
                                             "blurry, lowres")
    assert split_a1111_parameters("just a prompt") == ("just a prompt", "")


def test_png_a1111_and_comfy(tmp_path):
    assert image_prompts(png(tmp_path / "a.png", parameters=A1111))[1] == ["blurry, lowres"]
    assert image_prompts(png(tmp_path / "c.png", prompt=json.dumps(COMFY), workflow="{}")) == (
        ["a castle on a hill, 8k"], ["ugly"])


def test_exif_user_comment_jpeg_and_webp(tmp_path):
    body = "a red fox in the snow\nSteps: 20, Sampler: Euler a, Seed: 5"
    jpg = with_exif(tmp_path / "x.jpg", b"UNICODE\0" + body.encode("utf-16-be"), "JPEG")
    webp = with_exif(tmp_path / "y.webp", b"UNICODE\0" + body.encode("utf-16-le"), "WEBP")
    assert image_prompts(jpg) == (["a red fox in the snow"], [])
    assert image_prompts(webp) == (["a red fox in the snow"], [])


def test_harvest_folder_writes_prompts_file(tmp_path):
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    png(imgs / "a.png", parameters=A1111)
    png(imgs / "sub" / "b.png", prompt=json.dumps(COMFY))
    png(imgs / "plain.png")
    (imgs / "broken.png").write_bytes(b"not an image")
    stats = harvest(imgs, tmp_path / "prompts.txt", tmp_path / "neg.txt")
    assert stats == {"images": 4, "with_prompt": 2, "prompts": 2, "negatives": 2}
    lines = (tmp_path / "prompts.txt").read_text().splitlines()
    assert lines == ["portrait of a woman, (detailed:1.2), <lora:film:0.6> second line", "a castle on a hill, 8k"]
