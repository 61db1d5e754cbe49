"""This module provides tests of the models translation against Gemini's recorded models list."""

from relay.openai.models import gemini_model_name, to_model, to_model_list
from tests.openai import recordings

LIST = "models_list/llm-gemini__test_model_list.json"


def test_the_recorded_list_keeps_models_the_openai_door_can_call():
    page = recordings.response(LIST)
    listed = to_model_list([page])
    callable_models = [model["name"][len("models/"):] for model in page["models"]
                       if {"generateContent", "embedContent", "batchEmbedContents"} & set(model["supportedGenerationMethods"])]
    assert listed["object"] == "list"
    assert [model["id"] for model in listed["data"]] == callable_models
    assert listed["data"][0] == {"id": "gemini-2.5-flash", "object": "model", "created": 0, "owned_by": "google"}
    assert len(callable_models) < len(page["models"])  # the recording holds models neither door serves


def test_pages_are_concatenated_in_order():
    pages = [{"models": [{"name": "models/a"}], "nextPageToken": "t"}, {"models": [{"name": "models/b"}, "junk"]}, {}]
    assert [model["id"] for model in to_model_list(pages)["data"]] == ["a", "b"]


def test_one_model_and_names():
    assert to_model({"name": "models/gemini-2.5-pro", "displayName": "Gemini 2.5 Pro"}, created=5) == {
        "id": "gemini-2.5-pro", "object": "model", "created": 5, "owned_by": "google"}
    assert gemini_model_name("gemini-2.5-pro") == gemini_model_name("models/gemini-2.5-pro") == "models/gemini-2.5-pro"
