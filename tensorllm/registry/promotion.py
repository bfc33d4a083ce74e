"""The champion alias and the decisions that move it, recorded as tags on the version and the model."""

from __future__ import annotations

from mlflow.exceptions import MlflowException

from .names import DECISION_PREFIX, DEFAULT_ALIAS, PROMOTION_TAG, _check_alias, _check_name
from .values import _decision_tags, _now_iso

_OLD_PROMOTION_PREFIX = "last_promotion."  # a copy of last_decision.* when it promoted; no longer written


class PromotionMixin:
    """The champion alias and the decisions that move it, recorded as tags on the version and the model."""

    def champion(self, registered_model: str, alias: str = DEFAULT_ALIAS) -> dict | None:
        """version_info of the version holding ``alias``; None if the alias is unset or the model is not registered yet."""
        _check_name(registered_model)
        _check_alias(alias)
        try:
            model = self.client.get_registered_model(registered_model)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        version = (model.aliases or {}).get(alias)
        return None if version is None else self.version_info(registered_model, int(version))

    # ------------------------------------------------------------------ decisions

    def set_champion(self, registered_model: str, version: int, decision: dict[str, str],
                     alias: str = DEFAULT_ALIAS) -> None:
        """Point ``alias`` at ``version`` and record why, once in each place MLflow's UI shows it.

        The version: the tag ``promotion`` (:data:`PROMOTION_TAG`: "<rule>, <UTC time>") and the reason
        (``decision["reason"]``) as its description. The registered model: tags
        ``last_decision.*`` (every key of ``decision`` and those above, ``promoted=true``), replacing the previous
        decision's. Keys of ``decision`` may be given bare (``reason``) or prefixed (``promotion.reason``).
        """
        _check_alias(alias)
        mv = self._get_version(registered_model, version)
        previous = self._aliases(registered_model).get(alias)
        record = {**_decision_tags(decision), "alias": alias, "time": _now_iso(),
                  "version": str(mv.version), "previous_version": "" if previous is None else str(previous)}
        self.client.set_registered_model_alias(registered_model, alias, mv.version)
        self.client.set_model_version_tag(registered_model, mv.version, PROMOTION_TAG,
                                          ", ".join(x for x in (record.get("rule"), record["time"]) if x))
        if record.get("reason"):
            self.client.update_model_version(registered_model, mv.version, description=record["reason"])
        self._replace_model_tags(registered_model, DECISION_PREFIX, {**record, "promoted": "true"})

    def record_decision(self, registered_model: str, decision: dict[str, str]) -> None:
        """Record a decision that promoted nothing: registered-model tags ``last_decision.*`` (``promoted=false``)."""
        self._get_model(registered_model)
        record = {**_decision_tags(decision), "time": _now_iso(), "promoted": "false"}
        self._replace_model_tags(registered_model, DECISION_PREFIX, record)

    def _replace_model_tags(self, name: str, prefix: str, values: dict[str, str]) -> None:
        """Set ``prefix + key`` tags, dropping the prefix's other keys and the ``last_promotion.*`` copies that
        stores written by earlier versions carry (the champion's version tags hold the last promotion)."""
        stale = [k for k in self._get_model(name).tags
                 if (k.startswith(prefix) and k[len(prefix):] not in values) or k.startswith(_OLD_PROMOTION_PREFIX)]
        for k in stale:
            self.client.delete_registered_model_tag(name, k)
        for k, v in values.items():
            self.client.set_registered_model_tag(name, prefix + k, v)
