"""The Pod fields a plan reads, as types: the request's Pod is decoded into these and nothing else.

A request's Pod is mostly what injection never reads (env values, commands, probes, managedFields,
tolerations); `webhook.server.wire` decodes it into these TypedDicts, which keep only the fields below and
skip the rest at C speed. The types are exact, never `Any`: a value of any other type fails the typed
decode, and the review is then answered from the whole Pod as it always was (the same checks, the same
messages). So a plan on these fields reads exactly what it would read in the whole Pod.

What the plan needs beyond them (a claimed entry's containers, a volume or env var the Pod already has
under an entry's name, container resources for a limits rule) makes it ask for the whole Pod
(`webhook.core.pod.NeedsWholePod`). The patch only adds to the Pod as the apiserver sent it, so nothing
left out here is lost.
"""

from __future__ import annotations

from typing import Annotated, NotRequired, TypedDict

import msgspec

# orjson reads an integer beyond 64 bits as a float, which the engine refuses as a port: the typed decode refuses
# it, so the whole review answers (also for the rare integer between 2**63 and 2**64, which orjson reads as one).
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class Port(TypedDict):
    containerPort: Int64
    protocol: NotRequired[str | None]


class EnvName(TypedDict):
    name: NotRequired[str | None]


class Mount(TypedDict):
    mountPath: NotRequired[str | None]


# envFrom: [{configMapRef: {name, optional}, secretRef: {...}, prefix}], read for a warning's text.
EnvFrom = list[dict[str, dict[str, str | bool] | str]]


class Container(TypedDict):
    name: str
    ports: NotRequired[list[Port] | None]
    env: NotRequired[list[EnvName] | None]
    volumeMounts: NotRequired[list[Mount] | None]
    envFrom: NotRequired[EnvFrom | None]
    restartPolicy: NotRequired[str | None]


class Named(TypedDict):
    name: str


class NameRef(TypedDict):
    name: NotRequired[str | None]


class PodOS(TypedDict):
    name: NotRequired[str | None]


class PodResources(TypedDict):
    requests: NotRequired[dict[str, str] | None]
    limits: NotRequired[dict[str, str] | None]


class Spec(TypedDict):
    containers: NotRequired[list[Container] | None]
    initContainers: NotRequired[list[Container] | None]
    ephemeralContainers: NotRequired[list[Named] | None]
    volumes: NotRequired[list[Named] | None]
    imagePullSecrets: NotRequired[list[NameRef] | None]
    restartPolicy: NotRequired[str | None]
    hostNetwork: NotRequired[bool | None]
    os: NotRequired[PodOS | None]
    resources: NotRequired[PodResources | None]
    serviceAccountName: NotRequired[str | None]


class Metadata(TypedDict):
    name: NotRequired[str | None]
    generateName: NotRequired[str | None]
    namespace: NotRequired[str | None]
    labels: NotRequired[dict[str, str] | None]
    annotations: NotRequired[dict[str, str] | None]


class Pod(TypedDict):
    metadata: NotRequired[Metadata | None]
    spec: NotRequired[Spec | None]
