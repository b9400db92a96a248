"""The OpenAPI 3.0 description of `ovdoc serve`'s endpoints, served at /openapi.json.

Kept beside the handlers it describes; tests/test_serve.py validates it (openapi-spec-validator) and
checks that every route the server registers is described.
"""

from __future__ import annotations

from ovdoc.runtime.serve.inputs import MAX_BODY_BYTES, MAX_IMAGES


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def spec(version: str) -> dict:
    """The document; `version` is ovdoc's."""
    bearer = [{"bearer": []}, {"query_token": []}]
    image = {"type": "string", "format": "binary"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "ovdoc serve", "version": version,
                 "description": "One-class visual anomaly detection over HTTP: post pictures, get a score, "
                                "a verdict against the bundle's calibrated threshold and, for patch bundles, "
                                "where the anomaly is. A token (Bearer or ?token=) is required when the "
                                "server listens beyond loopback; /healthz and /readyz never need one."},
        "paths": {
            "/v1/score": {"post": {
                "summary": "Score one image, a multipart form of images, or a JSON batch of base64 images",
                "security": bearer,
                "parameters": [
                    {"name": "bundle", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "Which served bundle (GET /v1/bundles); default: the first one"},
                    {"name": "map", "in": "query", "required": False, "schema": {"type": "boolean"},
                     "description": "Patch bundles: also return each image's anomaly map as a PNG"},
                ],
                "requestBody": {"required": True, "description": f"At most {MAX_BODY_BYTES} bytes and "
                                                                f"{MAX_IMAGES} images.", "content": {
                    "image/*": {"schema": image},
                    "application/octet-stream": {"schema": image},
                    "multipart/form-data": {"schema": {"type": "object", "additionalProperties": image}},
                    "application/json": {"schema": {"$ref": "#/components/schemas/Batch"}},
                }},
                "responses": {
                    "200": {"description": "One result per image, in request order", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Scores"}}}},
                    "400": _error("Malformed request"),
                    "401": _error("Token missing or wrong"),
                    "404": _error("Unknown bundle"),
                    "413": _error("Body, image count or image size over the limit"),
                    "415": _error("Not an image, or an unsupported Content-Type"),
                    "503": _error("Busy (queue full), not ready, or shutting down: retry"),
                },
            }},
            "/v1/bundles": {"get": {
                "summary": "The bundles served, with their hashes and thresholds", "security": bearer,
                "responses": {"200": {"description": "Bundles", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["bundles", "default"], "properties": {
                        "default": {"type": "string"},
                        "bundles": {"type": "array", "items": {"$ref": "#/components/schemas/Bundle"}}}}}}},
                              "401": _error("Token missing or wrong")},
            }},
            "/healthz": {"get": {"summary": "The process answers", "security": [],
                                 "responses": {"200": {"description": "Alive"}}}},
            "/readyz": {"get": {"summary": "Every bundle is loaded and the server is not draining",
                                "security": [],
                                "responses": {"200": {"description": "Ready"},
                                              "503": _error("Not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus text format", "security": bearer, "responses": {
                "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                "401": _error("Token missing or wrong")}}},
            "/openapi.json": {"get": {"summary": "This document", "security": bearer, "responses": {
                "200": {"description": "OpenAPI 3.0", "content": {"application/json": {
                    "schema": {"type": "object"}}}}}}},
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "query_token": {"type": "apiKey", "in": "query", "name": "token"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string", "description": "One line"}}},
                "Batch": {"type": "object", "required": ["images"], "properties": {
                    "images": {"type": "array", "maxItems": MAX_IMAGES, "items": {"oneOf": [
                        {"type": "string", "format": "byte"},
                        {"type": "object", "required": ["data"], "properties": {
                            "name": {"type": "string"}, "data": {"type": "string", "format": "byte"}}},
                    ]}},
                    "map": {"type": "boolean", "default": False}}},
                "BundleRef": {"type": "object", "required": ["name", "hash"], "properties": {
                    "name": {"type": "string"},
                    "hash": {"type": "string", "description": "The manifest's sha256"}}},
                "Result": {"type": "object",
                           "required": ["name", "score", "anomalous", "threshold", "bundle"], "properties": {
                    "name": {"type": "string"},
                    "score": {"type": "number", "description": "Higher = more anomalous"},
                    "anomalous": {"type": "boolean", "description": "score > threshold"},
                    "threshold": {"type": "number"},
                    "bundle": {"$ref": "#/components/schemas/BundleRef"},
                    "width": {"type": "integer"}, "height": {"type": "integer"},
                    "box": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4,
                            "description": "Patch bundles: x0, y0, x1, y1 (inclusive) of the hottest region"},
                    "peak": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                    "map_peak": {"type": "number"}, "map_threshold": {"type": "number"},
                    "map_png": {"type": "string", "format": "byte",
                                "description": "With map=true: 8-bit grey PNG, value = level * map_scale"},
                    "map_scale": {"type": "number"}}},
                "Scores": {"type": "object", "required": ["results"], "properties": {
                    "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}}}},
                "Bundle": {"type": "object", "required": ["name", "hash", "mode", "threshold"],
                           "properties": {
                    "name": {"type": "string"}, "path": {"type": "string"}, "hash": {"type": "string"},
                    "mode": {"type": "string", "enum": ["global", "patch"]}, "threshold": {"type": "number"},
                    "batch": {"type": "integer"}, "device": {"type": "string"},
                    "input": {"type": "object"}, "loaded_at": {"type": "number"},
                    "reloads": {"type": "integer"},
                    "last_reload_error": {"type": "string", "nullable": True}}},
            },
        },
    }
