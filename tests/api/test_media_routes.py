"""Tests of Imagen ``:predict`` and Veo ``:predictLongRunning`` with its operations (relay.api.media) in this
process: checked loosely, models resolved like every model route, operations and their videos the caller's."""

import pytest

from tests.api.conftest import CLIENT_B, as_client, upstream_calls

VEO = "veo-3.0-generate-001"


@pytest.fixture
def app(relay_app):
    return relay_app()


def start_video(client, body=None, model=VEO, key=None):
    headers = as_client(key) if key else as_client()
    return client.post(f"/v1beta/models/{model}:predictLongRunning", headers=headers,
                       json=body or {"instances": [{"prompt": "waves"}], "parameters": {"sampleCount": 2}})


def test_predict_is_relayed_and_checked_loosely(app, google, google_error):
    client = app.test_client()
    response = client.post("/v1beta/models/imagen-4.0-generate-001:predict", headers=as_client(),
                           json={"instances": [{"prompt": "a cat", "futureField": 1}], "parameters": {"sampleCount": 1}})
    assert response.status_code == 200 and response.get_json()["predictions"][0]["mimeType"] == "image/png"
    for bad in ({}, {"instances": []}, {"instances": "a cat"}, {"instances": [{}], "parameters": [1]}):
        google_error(client.post("/v1beta/models/imagen-4.0-generate-001:predict", headers=as_client(), json=bad),
                     400, "INVALID_ARGUMENT")
    assert len(upstream_calls(google, ":predict")) == 1


def test_aliases_resolve_on_media_routes(relay_app, google):
    client = relay_app(overrides={"aliases": {"video": VEO}}).test_client()
    assert start_video(client, model="video").status_code == 200
    assert upstream_calls(google, ":predictLongRunning")[0]["path"] == f"/v1beta/models/{VEO}:predictLongRunning"


def test_an_operation_is_its_callers_and_its_videos_become_the_callers_files(app, google, google_error):
    client = app.test_client()
    name = start_video(client).get_json()["name"]
    owner = google.resources.operations[name].owner
    google_error(client.get(f"/v1beta/{name}", headers=as_client(CLIENT_B)), 403, "PERMISSION_DENIED")
    polls = [client.get(f"/v1/{name}", headers=as_client()).get_json() for _ in range(3)]
    assert polls[0].get("done") is None and polls[-1]["done"] is True
    assert {entry["key"] for entry in upstream_calls(google, "/operations/")} == {owner}
    samples = polls[-1]["response"]["generateVideoResponse"]["generatedSamples"]
    for sample in samples:
        file_id = sample["video"]["uri"].split("/files/")[1].split(":")[0]
        video = client.get(f"/v1beta/files/{file_id}:download?alt=media", headers=as_client())
        assert video.status_code == 200 and len(video.get_data()) == google.resources.files[file_id].size
        google_error(client.get(f"/v1beta/files/{file_id}:download?alt=media", headers=as_client(CLIENT_B)), 403,
                     "PERMISSION_DENIED")
    listed = client.get("/v1beta/files", headers=as_client()).get_json()["files"]
    assert len(listed) == len(samples) == 2


@pytest.mark.parametrize("path", [
    "/v1beta/models/../operations/x", "/v1beta/models/.hidden/operations/x", "/v1beta/models/veo/operations/a.b",
    "/v1beta/operations/x%2F..%2Fy",
])
def test_operation_names_relay_cannot_route_are_refused(client, google, path):
    response = client.get(path, headers=as_client())
    assert response.status_code in (400, 403, 404)
    assert upstream_calls(google) == []


def test_extending_a_video_needs_the_video_to_be_the_callers(app, google, google_error):
    client = app.test_client()
    name = start_video(client).get_json()["name"]
    polls = [client.get(f"/v1beta/{name}", headers=as_client()).get_json() for _ in range(2)]
    uri = polls[-1]["response"]["generateVideoResponse"]["generatedSamples"][0]["video"]["uri"]
    extend = {"instances": [{"prompt": "longer", "video": {"uri": uri}}]}
    google_error(start_video(client, extend, key=CLIENT_B), 403, "PERMISSION_DENIED")
    assert start_video(client, extend).status_code == 200
    sent = upstream_calls(google, ":predictLongRunning")
    assert len(sent) == 2 and sent[-1]["key"] == sent[0]["key"]
