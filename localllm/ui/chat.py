"""Chat tab: plain or grounded chat with the selected local model, streamed, saved, with sources;
the last answer regenerated, the last question edited, the saved conversations searched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from localllm.chat.conversations import ConversationError
from localllm.chat.sources import source_page
from localllm.errors import LocalLLMError
from localllm.rag.prompt import Source
from localllm.services import Services
from localllm.ui.chat_actions import ChatEvents, no_page
from localllm.ui.chat_options import build_parameters
from localllm.ui.chat_view import (
    collection_choices,
    conversation_choices,
    conversation_to_delete,
    default_collection,
    default_model_name,
    display_messages,
    document_choices,
    model_choices,
    model_note,
    searched_conversations,
    source_passage,
    source_radio,
)
from localllm.ui.citations import SHOW_PAGE, Citation, citation_catcher
from localllm.ui.confirm import confirm_delete


@dataclass
class ChatTab:
    model: gr.Dropdown
    status: gr.Markdown
    collection: gr.Dropdown
    conversations: gr.Dropdown


def build_chat_tab(services: Services) -> ChatTab:
    settings = services.settings
    conversation = gr.State("")  # id of the saved conversation, "" before the first message
    message_ids = gr.State([])  # saved message id of each message shown
    sources_state = gr.State([])  # the last answer's sources, as dicts
    display = gr.State([])  # the messages shown, kept out of the API's inputs
    with gr.Row(elem_classes="chat-layout"):
        with gr.Column(scale=1, min_width=200, elem_classes="chat-side"):
            new_chat = gr.Button("New chat", size="sm", elem_id="new-chat")
            search = gr.Textbox(
                placeholder="Search saved conversations",
                show_label=False,
                elem_id="conversation-search",
                container=False,
            )
            conversations = gr.Dropdown(
                label="Saved conversations",
                choices=conversation_choices(services),
                value=None,
                elem_id="conversations",
            )
            delete_chat = confirm_delete("Delete conversation", "delete-chat", size="sm")
        with gr.Column(scale=4, elem_classes="chat-main"):
            chatbot = gr.Chatbot(
                label="Conversation",
                height=480,
                elem_id="chatbot",
                placeholder="Ask the local model anything. Nothing leaves this machine.",
                buttons=["copy"],
                sanitize_html=True,
                editable="user",  # the last question edited is answered again
            )
            catcher = citation_catcher()
            with gr.Row():
                message = gr.Textbox(
                    placeholder="Type a message and press Enter",
                    show_label=False,
                    scale=1,
                    elem_id="message",
                    autofocus=True,
                )
                send = gr.Button("Send", variant="primary", scale=0, min_width=80, elem_id="send")
                stop = gr.Button("Stop", variant="stop", scale=0, min_width=80, elem_id="stop")
            sources = gr.Radio(
                label="Sources of the last answer (click one to see the page)",
                choices=[],
                visible=False,
                elem_id="sources",
            )
            with gr.Row(elem_classes="source-view"):
                passage = gr.Markdown("", elem_id="source-passage")
                page_image = gr.Image(
                    label="Page",
                    type="pil",
                    visible=False,
                    interactive=False,
                    elem_id="source-page",
                    buttons=["fullscreen"],
                )
        with gr.Column(scale=1, min_width=300, elem_classes="chat-settings"):
            collection = gr.Dropdown(
                label="Documents",
                choices=collection_choices(services),
                value=default_collection(services),
                elem_id="chat-collection",
                allow_custom_value=True,
                info="Grounded answers cite these documents; plain chat uses none.",
            )
            only = gr.Dropdown(
                label="Only these documents",
                choices=document_choices(services, default_collection(services)),
                value=[],
                multiselect=True,
                elem_id="chat-documents",
                allow_custom_value=True,
                info="Empty: the whole collection.",
            )
            model = gr.Dropdown(
                label="Model",
                choices=model_choices(services),
                value=default_model_name(services),
                elem_id="model",
            )
            status = gr.Markdown(services.models.describe_loaded(), elem_id="model-status")
            note = gr.Markdown(model_note(services, model.value), elem_id="model-note")
            model.change(lambda name: model_note(services, name), model, note, api_name=False)
            parameters = build_parameters(settings)

    events = ChatEvents(services)

    def shown_source(
        source: Source, collection_name: str | None, spans: list[tuple[int, int]] | None = None
    ) -> tuple[Any, Any]:
        """The passage and the page of a source, highlighting `spans` (None: all its spans)."""
        header = source_passage(source, spans)
        try:
            shown = source_page(services.store, collection_name or "", source, spans)
        except LocalLLMError as e:
            return f"{header}\n\n_{e}_", no_page()
        return header, gr.update(value=shown.image, label=shown.label, visible=True)

    def show_source(
        choice: str | None, current: list[dict[str, Any]], collection_name: str | None
    ) -> tuple[Any, Any]:
        found = [Source.from_dict(s) for s in current if str(s.get("n")) == choice]
        if not choice or not found:
            return "", no_page()
        return shown_source(found[0], collection_name)

    def show_citation(collection_name: str | None, event: gr.EventData) -> tuple[Any, ...]:
        """A citation clicked: its source chosen, its page with the sentence's support on it."""
        cited = Citation.parse(str(getattr(event, "link", "")))
        if cited is None:
            return (gr.skip(),) * 4
        try:
            message = services.conversations.message(cited.message_id)
        except ConversationError as e:
            return f"_{e}_", no_page(), gr.skip(), gr.skip()
        sources = [Source.from_dict(s) for s in message.sources]
        found = [s for s in sources if s.n == cited.n]
        if not found:
            return f"_This answer has no source [{cited.n}]_", no_page(), gr.skip(), gr.skip()
        spans = [cited.span] if cited.span else None
        passage_text, page = shown_source(found[0], collection_name, spans)
        chosen = source_radio(sources, cited.n)
        return passage_text, page, [s.to_dict() for s in sources], chosen

    def rate(ids: list[int], data: gr.LikeData) -> None:
        index = data.index[0] if isinstance(data.index, list | tuple) else data.index
        if not isinstance(index, int) or index >= len(ids):
            gr.Warning("This answer is still being written (or checked): rate it once it is done")
            return
        rating = 1 if data.liked is True else -1 if data.liked is False else 0
        services.conversations.rate(ids[index], rating)
        gr.Info("Thanks: liked answers can become fine-tuning examples" if rating > 0 else "Noted")

    def open_conversation(conversation_id: str | None) -> tuple[Any, ...]:
        if not conversation_id:
            return (gr.skip(),) * 9
        summary = services.conversations.get(conversation_id)
        shown, ids, thumbs = display_messages(services, conversation_id)
        last = [m for m in services.conversations.messages(conversation_id) if m.sources]
        last_sources = [Source.from_dict(s) for s in last[-1].sources] if last else []
        return (
            gr.update(value=shown, feedback_value=thumbs),
            shown,
            conversation_id,
            ids,
            [s.to_dict() for s in last_sources],
            source_radio(last_sources),
            gr.update(value=summary.collection or ""),
            "",
            no_page(),
        )

    def start_new(query: str = "") -> tuple[Any, ...]:
        return (
            gr.update(value=[], feedback_value=[]),
            [],
            "",
            [],
            [],
            source_radio([]),
            gr.update(choices=conversation_choices(services, query), value=None),
            "",
            no_page(),
        )

    def delete_conversation(conversation_id: str, query: str) -> tuple[Any, ...]:
        if conversation_id:
            services.conversations.delete(conversation_id)
        return start_new(query)

    inputs = [
        message,
        conversation,
        display,
        message_ids,
        model,
        collection,
        only,
        *parameters.inputs,
    ]
    outputs = [
        chatbot,
        display,
        message,
        conversation,
        message_ids,
        sources_state,
        sources,
        status,
        conversations,
        passage,
        page_image,
    ]
    # Each answer is first marked as asked, outside the queue, so that a Stop pressed while it
    # waits for another page's answer ends it too.
    ask = {"fn": events.queued, "queue": False, "api_name": False}
    llm = {"outputs": outputs, "concurrency_id": "llm"}
    submit = message.submit(**ask).then(events.respond, inputs, api_name="chat", **llm)
    click = send.click(**ask).then(events.respond, inputs, api_name=False, **llm)
    again = [conversation, display, model, collection, only, *parameters.inputs]
    retry = chatbot.retry(**ask).then(events.regenerate, again, api_name=False, **llm)
    # Not `.then`: the edit's EditData (which message, its new text) comes with its own event, so
    # its mark is a second listener of the same event (Answering.queued keeps a live answer's).
    chatbot.edit(**ask)
    edit = chatbot.edit(events.edit, again, api_name=False, **llm)
    answers = [submit, click, retry, edit]
    stop.click(events.stop, None, None, api_name=False)
    # The saved list as the search narrows it, also once an answer (or a Stop) has changed it.
    listed = ([search, conversation], conversations)
    search.change(lambda q, c: searched_conversations(services, q, c), *listed, api_name=False)
    for answer in answers:
        answer.then(lambda q, c: searched_conversations(services, q, c), *listed, api_name=False)
    # `input`, not `change`: a citation clicked chooses its source, and draws its page itself.
    sources.input(
        show_source, [sources, sources_state, collection], [passage, page_image], api_name=False
    )
    catcher.cite(
        show_citation,
        [collection],
        [passage, page_image, sources_state, sources],
        api_name=False,
    ).then(None, js=SHOW_PAGE)
    chatbot.like(rate, [message_ids], None, api_name=False)
    collection.change(
        lambda name: gr.update(choices=document_choices(services, name), value=[]),
        collection,
        only,
        api_name=False,
    )
    conversations.input(
        open_conversation,
        [conversations],
        [
            chatbot,
            display,
            conversation,
            message_ids,
            sources_state,
            sources,
            collection,
            passage,
            page_image,
        ],
        api_name=False,
        cancels=answers,
    )
    fresh = [
        chatbot,
        display,
        conversation,
        message_ids,
        sources_state,
        sources,
        conversations,
        passage,
        page_image,
    ]
    new_chat.click(start_new, [search], fresh, api_name=False, cancels=answers)
    delete_chat.wire(
        lambda chat_id, _query: conversation_to_delete(services, chat_id),
        delete_conversation,
        [conversation, search],
        fresh,
        api_name=False,
        disarm_on=[conversations],
        cancels=answers,
    )
    chatbot.clear(start_new, [search], fresh, api_name=False, cancels=answers)
    return ChatTab(model=model, status=status, collection=collection, conversations=conversations)
