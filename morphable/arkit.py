"""ICT expression names -> Apple ARKit blendshape names (``eyeBlink_L`` -> ``eyeBlinkLeft``).

ICT-FaceKit's 53 expressions are ARKit's blendshapes with a ``_L`` / ``_R``
suffix where ARKit says ``Left`` / ``Right``. Both mean the subject's own side:
ICT's ``_L`` shapes move vertices at +x, the subject's left in the model frame
(``eyeBlink_L``'s displacement is centred at x = +32 mm). Where they differ:

- ICT splits ``browInnerUp`` and ``cheekPuff`` into a left and a right shape;
  ARKit has one of each. The split shapes have no ARKit name and keep ICT's
  (``browInnerUp_L`` ...), as every ICT-only shape does;
- ARKit's ``tongueOut`` has no ICT shape.
"""
from __future__ import annotations

from typing import List, Sequence

# Apple's ARFaceAnchor.BlendShapeLocation raw values (52).
ARKIT_NAMES = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)

_SIDES = {"_L": "Left", "_R": "Right"}


def arkit_name(ict_name: str) -> str:
    """ARKit's name for one ICT expression; ICT's own name where ARKit has none."""
    for suffix, side in _SIDES.items():
        if ict_name.endswith(suffix):
            candidate = ict_name[:-len(suffix)] + side
            return candidate if candidate in ARKIT_NAMES else ict_name
    return ict_name


def arkit_names(ict_names: Sequence[str]) -> List[str]:
    """ARKit names for a model's ``exp_names``, in its order. Raises ValueError if two would clash."""
    names = [arkit_name(n) for n in ict_names]
    if len(set(names)) != len(names):
        raise ValueError("expression names clash after mapping to ARKit's")
    return names
