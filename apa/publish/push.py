"""Upload a run's adapter, with its model card, to the Hugging Face hub.

    apa push outputs/runs/<run> --repo-id USER/NAME [--public] [--revision BRANCH] [--commit-message TEXT]

Uploads final_model/ (the adapter, the tokenizer with the control tokens, the base checkpoint's processor files, and
README.md: this project's card, with the base model and revision, the dataset and the metrics as Hugging Face
metadata) in one commit (huggingface_hub: `create_repo`, `upload_folder`). The repository is created private unless
--public is given, and an existing public repository is refused without --public. The trainer's training_args.bin
(a pickle holding the run's local paths) is not uploaded. Where final_model/ holds no card, or PEFT's blank template
(a run trained before final_model/ carried the card), the card is written first.

Offline (HF_HUB_OFFLINE=1), without a token or without a connection to the hub, it stops within seconds in one line,
before anything is written or sent. `peft.AutoPeftModelForCausalLM.from_pretrained("USER/NAME")` then loads the base
at the revision the run trained on, and the adapter on it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from apa.errors import UserError, one_line_errors
from apa.publish import final_model_of
from apa.run_folder import MODEL_CARD

LEFT_BEHIND = ("training_args.bin",)


class PushError(UserError):
    """The hub cannot be reached, refuses, or would expose a private adapter; the message says what to do."""


def files_to_upload(adapter: Path) -> list[str]:
    """The adapter folder's files that go to the hub (hidden files and LEFT_BEHIND stay)."""
    return sorted(p.name for p in adapter.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name not in LEFT_BEHIND)


def hub_token(repo_id: str) -> str:
    """The token to write with, once the hub is known to be usable now: online, a token, a connection."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from apa.offline import hub_unreachable

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PushError(f"--repo-id {repo_id}: {str(e).splitlines()[0]} (e.g. --repo-id your-name/apa-lora)") from e
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise PushError("HF_HUB_OFFLINE=1: nothing can be uploaded offline. Unset it (and be online) to push")
    token = get_token()
    if token is None:
        raise PushError("no Hugging Face token: log in with `hf auth login` (a token with write access), or set "
                        "HF_TOKEN")
    reason = hub_unreachable()
    if reason is not None:
        raise PushError(f"the hub ({constants.ENDPOINT}) cannot be reached ({reason}); nothing was uploaded. Push "
                        "again once online")
    return token


def push(path: Path, repo_id: str, public: bool = False, revision: str | None = None,
         commit_message: str | None = None):
    """Upload the final_model/ of the run at `path` to `repo_id`; returns huggingface_hub's CommitInfo."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HTTPError

    from apa.reporting.model_card import is_generic_card, write_model_card

    run_dir, adapter = final_model_of(path)
    api = HfApi(token=hub_token(repo_id))
    if is_generic_card(adapter / MODEL_CARD):
        write_model_card(run_dir)
        print(f"wrote this project's model card into {adapter / MODEL_CARD} (it held none, or PEFT's blank template)")
    files = files_to_upload(adapter)
    try:
        api.create_repo(repo_id, private=not public, exist_ok=True, repo_type="model")
        private = api.repo_info(repo_id).private
        if not public and not private:
            raise PushError(f"{repo_id} exists and is public; nothing was uploaded. Pass --public to publish into "
                            "it, or choose another --repo-id (new repositories are created private)")
        if public and private:
            print(f"{repo_id} exists and is private, and stays so: --public sets only a new repository's visibility")
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=str(adapter), allow_patterns=files,
                                 revision=revision, repo_type="model",
                                 commit_message=commit_message or f"apa push: {run_dir.name}/{adapter.name}")
    except HfHubHTTPError as e:
        raise PushError(f"the hub refused ({_first_line(e.server_message or e)}); check that the token may write "
                        f"to {repo_id} (`hf auth whoami`)") from e
    except (HTTPError, OSError) as e:  # the connection failed on the way (HfHubHTTPError is one too: caught above)
        raise PushError(f"the upload to {repo_id} failed ({type(e).__name__}: {_first_line(e)}); a commit is all "
                        "or nothing, so the repository is as it was: push again") from e


def _first_line(message) -> str:
    return (str(message).strip().splitlines() or [""])[0]


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a run folder, or its final_model/")
    parser.add_argument("--repo-id", required=True, help="the hub model repository, USER/NAME (created if missing)")
    parser.add_argument("--public", action="store_true", help="create the repository public (default: private)")
    parser.add_argument("--revision", help="the branch to commit to (created if missing; default: main)")
    parser.add_argument("--commit-message", help="the commit's message")
    args = parser.parse_args(argv)
    info = push(args.path, args.repo_id, args.public, args.revision, args.commit_message)
    print(f"Pushed {args.path} to {args.repo_id}" + (f" (branch {args.revision})" if args.revision else "")
          + f": {info.commit_url}")


if __name__ == "__main__":
    main()
