"""This module provides the translation of OpenAI content parts into Gemini parts, and their shape checks.

text → ``text``; ``image_url`` with a base64 ``data:`` URL → ``inlineData``, with an http(s) URL →
``fileData.fileUri`` (relay never fetches it); ``input_audio`` → ``inlineData`` (``audio/wav``,
``audio/mp3``, …); ``file`` with ``file_data`` → ``inlineData``.  Undecodable data raises InvalidArgument
naming the part's param.  Pure: no I/O.
"""

from marshmallow import ValidationError

from relay.errors import bad_request
from relay.schemas.gemini import validate_base64

AUDIO_FORMATS = {
    "wav": "audio/wav", "mp3": "audio/mp3", "aiff": "audio/aiff", "aac": "audio/aac", "ogg": "audio/ogg",
    "flac": "audio/flac",
}
NO_FILE_TYPE = "Must be a data: URL (data:<mime type>;base64,<data>), or name a file whose extension gives its type."
# Types Gemini reads, by file extension: for file parts sent as bare base64 and for http(s) image URLs.
EXTENSION_TYPES = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
    "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf", "txt": "text/plain",
    "md": "text/markdown", "csv": "text/csv", "html": "text/html", "mp3": "audio/mp3", "wav": "audio/wav",
    "mp4": "video/mp4", "mov": "video/mov", "webm": "video/webm",
}


def parts_problems(content, allowed):
    """marshmallow-style errors for a content list whose parts may be of the ``allowed`` types."""
    if not isinstance(content, list):
        return ["Must be a string or a list of content parts."]
    problems = {}
    for index, part in enumerate(content):
        problem = _part_problem(part, allowed)
        if problem:
            problems[index] = problem
    return problems


def _part_problem(part, allowed):
    if not isinstance(part, dict):
        return ["Must be an object with a type."]
    kind = part.get("type")
    if kind not in allowed:
        return {"type": [f"Must be one of {', '.join(allowed)} in this message."]}
    value = part.get(kind)
    if kind in ("text", "refusal"):
        return None if isinstance(value, str) else {kind: ["Must be a string."]}
    if kind == "image_url":
        url = value.get("url") if isinstance(value, dict) else value
        return None if isinstance(url, str) else {"image_url": {"url": ["Must be a string."]}}
    if kind == "input_audio":
        if not isinstance(value, dict) or not isinstance(value.get("data"), str):
            return {"input_audio": {"data": ["Must be a base64 string."]}}
        if not isinstance(value.get("format"), str) or value["format"] not in AUDIO_FORMATS:
            return {"input_audio": {"format": [f"Must be one of {', '.join(AUDIO_FORMATS)}."]}}
        return None
    if not isinstance(value, dict):
        return {"file": ["Must be an object with file_data."]}
    if value.get("file_data") is None and value.get("file_id") is not None:
        return {"file": {"file_id": ["OpenAI file ids have no Gemini counterpart: send file_data."]}}
    return None if isinstance(value.get("file_data"), str) else {"file": {"file_data": ["Must be a string."]}}


def user_parts(content, path):
    """Gemini parts for a validated user ``content``; ``path`` names the message in errors."""
    if isinstance(content, str):
        return [{"text": content}]
    return [_user_part(part, f"{path}.content[{index}]") for index, part in enumerate(content)]


def _user_part(part, path):
    kind = part["type"]
    if kind == "text":
        return {"text": part["text"]}
    if kind == "image_url":
        image = part["image_url"]
        return _url_part(image["url"] if isinstance(image, dict) else image, f"{path}.image_url.url")
    if kind == "input_audio":
        audio, data_path = part["input_audio"], f"{path}.input_audio.data"
        return {"inlineData": {"mimeType": AUDIO_FORMATS[audio["format"]], "data": _base64(audio["data"], data_path)}}
    file, data_path = part["file"], f"{path}.file.file_data"
    if file["file_data"].startswith("data:"):
        return {"inlineData": _data_url(file["file_data"], data_path)}
    mime_type = _type_of(file.get("filename"))
    if mime_type is None:
        raise bad_request([(data_path, NO_FILE_TYPE)])
    return {"inlineData": {"mimeType": mime_type, "data": _base64(file["file_data"], data_path)}}


def _url_part(url, path):
    if url.startswith("data:"):
        return {"inlineData": _data_url(url, path)}
    if not url.startswith(("http://", "https://")):
        raise bad_request([(path, "Must be a data: URL or an http(s) URL.")])
    file_data = {"fileUri": url}
    mime_type = _type_of(url.split("?", 1)[0].split("#", 1)[0])
    if mime_type:
        file_data["mimeType"] = mime_type
    return {"fileData": file_data}


def _data_url(url, path):
    header, comma, data = url.partition(",")
    media = header[len("data:"):].split(";")
    if not comma or not media[0] or "base64" not in media[1:]:
        raise bad_request([(path, "Must be a base64 data URL: data:<mime type>;base64,<data>.")])
    return {"mimeType": media[0], "data": _base64(data, path)}


def _base64(data, path):
    try:
        validate_base64(data)
    except ValidationError:
        raise bad_request([(path, "Must be base64-encoded bytes.")]) from None
    return data


def _type_of(name):
    if not isinstance(name, str) or "." not in name:
        return None
    return EXTENSION_TYPES.get(name.rsplit(".", 1)[1].lower())
