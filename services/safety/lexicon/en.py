"""The English words of the injection frames (see `services.safety.lexicon`)."""

from __future__ import annotations

LEXICON: dict[str, str] = {
    "override_verbs": r"ignore|ignoring|disregard|disregarding|forget|forgetting|override|bypass|"
    r"skip|discard|abandon|drop|never ?mind|stop following|don'?t follow|do not follow|"
    r"stop obeying|stop listening to|set aside|put aside|pay no attention to|throw out|"
    r"throw away|scrap|ditch|cancel|erase|delete|get rid of|break free from|violate|"
    r"no longer follow",
    "everything_told": r"(?:everything|anything|all|the text|the) (?:above|before this|prior to "
    r"this|you(?: were|'ve been|ve been| have been) (?:told|instructed|programmed|given)|in your "
    r"(?:prompt|instructions)|(?:they|your \w+) told you)",
    "strong_nouns": r"instructions?|directives?|guidelines?|programming|guardrails?|"
    r"system prompts?|system messages?|system instructions",
    "weak_nouns": r"rules|restrictions|constraints|prompts?|training|polic(?:y|ies)|orders|"
    r"filters|settings|protocols|principles|ethics|commands",
    "makers": r"creators?|developers?|makers?|programmers?|owners?|openai|company",
    "fillers": r"all|any|every|each|of|the|these|those|my|our|your|its|previous|previously|prior|"
    r"above|earlier|preceding|initial|original|existing|current|system|safety|old|given|that|"
    r"you|were|have|been|got|in|everything|instructions and|rules and|other|default|"
    r"built in|hidden|internal|whole|entire|usual|exact|own",
    "system_det": r"all|any|every|your|its|previous|previously|prior|above|earlier|preceding|"
    r"initial|original|system|safety|default|built in|hidden|internal|existing",
    "possessive_det": r"your|its|previous|previously|prior|above|earlier|preceding|initial|"
    r"original|system|safety|default|built in|hidden|internal",
    "second_person": r"your|ur|yr",
    "system_after": r"above",
    "speaker_det": r"my|our|mine",
    "speaker_clause": r"(?:that |which )?(?:i|we)(?: just| already| previously| earlier| once)? "
    r"(?:gave|told|set|sent|wrote|made|asked|put|added|shared|mentioned|provided|specified|"
    r"listed|had given|have given|'ve given|ve given|'d given|set up|came up with)",
    "ai_owned": r"(?:that |which )?(?:you (?:were|have been|'ve been|ve been|got) (?:given|told|"
    r"programmed|trained|instructed|configured)|(?:were|have) you (?:been )?(?:given|told|"
    r"programmed|instructed)|you (?:operate|run|work|act) (?:under|on|by|with)|"
    r"(?:your|the) (?:creators?|developers?|makers?|"
    r"programmers?|owners?|company|team) (?:gave|give|have given|set|wrote|programmed)|(?:they|"
    r"someone|somebody|openai) (?:gave|give|have given) you|you (?:came|come|started) with)",
    "object_link": r"about|for|on|regarding|concerning|around|re|from|of|in|at",
    "first_person": r"my|our|mine",
    "object_det": r"the|this|that|a|an|his|her|their|these|those",
    "ai_terms": r"you|yourself|me|us|now|here|this|conversation|chat|session|assistant|ai|bot|"
    r"chatbot|model|system|companion|developers?|creators?|openai|everyone|everybody|answers?|"
    r"repl(?:y|ies)|responses?|messages?|output|prompt|task|text|questions?|requests?|rest|next|"
    r"following|remainder|good|ever|today|tonight|while|moment|time|future|everything|safety",
    "invalidated": r"(?:don'?t|do not|no longer|not) apply|(?:don'?t|do not) (?:matter|count)|"
    r"no longer (?:matter|count|exist|hold)|(?:are|is|were|have been|has been) (?:now )?"
    r"(?:cancell?ed|canceled|void|invalid|suspended|lifted|revoked|over|disabled|gone|obsolete|"
    r"removed|deleted|null|off|irrelevant|outdated)|(?:are|is) no longer (?:valid|active|"
    r"in effect|in force|relevant)|(?:were|was|have) never (?:been )?(?:written|given|there|real)|"
    r"never existed",
    "no_longer_follow": r"you (?:no longer|don'?t|do not|needn'?t|need not) (?:need to |have to |"
    r"must )?(?:follow|obey|respect|stick to|adhere to)|you(?:'re| are| re) (?:no longer|not) "
    r"(?:bound by|required to follow|obliged to follow)|(?:stop|quit) (?:following|obeying|"
    r"respecting|listening to)",
    "obey_me": r"(?:^|\. |you (?:must|will|shall|have to|need to) |now |and |just |only |so )"
    r"(?:obey|follow|listen to) (?:only )?(?:me|my (?:commands|orders|instructions))\b|"
    r"obey only me|you (?:answer|listen|report) only to me",
    "new_instructions": r"(?:new|updated|revised) (?:instructions|directives|system prompt|rules)",
    "reveal": r"reveal|show|print|repeat|output|display|tell|give|share|say|recite|read|list|"
    r"dump|leak|copy|paste|write out|write down|summari[sz]e|translate|spell out|paraphrase|"
    r"explain|describe|what is|what's|whats|what are|what were|what was|which are|send me|"
    r"type out",
    "secret_target": r"(?:your|ur|yr) (?:(?:own|full|whole|entire|exact|real|actual|original|"
    r"initial|hidden|secret|internal|system|starting|first|preset|configured|underlying|"
    r"developer|base|core|current) ){0,2}(?:system prompt|prompt|system message|programming|"
    r"configuration|config|instructions|directives|guidelines|setup)|the (?:(?:full|whole|exact|"
    r"real|original|initial|hidden|secret|internal|system|starting|underlying|developer) ){1,2}"
    r"(?:prompt|message|instructions|directives|guidelines)|the system (?:prompt|message)|"
    r"the (?:instructions|text|prompt|messages?|rules) (?:above|before (?:this|my))",
    "secret_nouns": r"prompt|instructions|directives|guidelines|rules|programming|configuration",
    "weak_secret_target": r"(?:your|ur) (?:(?:own|real|actual|secret|hidden|internal) )?"
    r"(?:rules|restrictions|polic(?:y|ies)|limits|boundaries)",
    "verbatim": r"verbatim|word for word|exactly as written|letter for letter|character by "
    r"character",
    "told_before": r"what (?:you were|you've been|you have been|were you|have you been|they) "
    r"(?:told|given|instructed|programmed)(?: you)?(?: to \w+)?(?: \w+)? (?:before|at the "
    r"(?:start|beginning)|initially|earlier|first)|(?:everything|all|"
    r"the text|what's|what is) (?:above|before) (?:this|the|my) (?:line|message|point)|"
    r"(?:messages?|text|instructions|part|things?) (?:that )?(?:i|users?) (?:can'?t|cannot|"
    r"can not|don'?t|do not) see|hidden from me|the first message (?:in|of) (?:this|the|our) "
    r"(?:conversation|chat)|before (?:i|we) started (?:talking|chatting)",
    "persona": r"you(?: are|'re| re| r) (?:now|no longer|not)|from now on|act(?:ing)? as|"
    r"become|turn into|"
    r"behave (?:as|like)|pretend|imagine you|role ?play|play (?:a|the) (?:game|role)|"
    r"(?:stay|remain) in character|you will be|be an? (?:ai|assistant|bot)|(?:an?|the) "
    r"(?:ai|assistant|bot|model|chatbot|version of you)|you (?:have|had) no|where you(?:'re| are)",
    "unrestricted": r"(?:no|without|without any|free of|free from|unbound by|not bound by|zero|"
    r"with no|no more) (?:(?:ethical|moral|safety|content|real) )?(?:rules|restrictions|"
    r"filters|guidelines|censorship|guardrails|content "
    r"polic(?:y|ies)|safety (?:rules|filters|guidelines)|ethics|morals|morality|boundaries|"
    r"limitations)|unrestricted|unfiltered|uncensored|jailbroken|amoral|unethical",
    "mode_command": r"(?:please )?(?:enable|activate|enter|unlock|switch to|switch into|go into|"
    r"engage|turn on|boot into|start) (?:the |your )?(?:developer|dev|dan|god|admin|sudo|debug|"
    r"unrestricted|jailbreak|jailbroken|unfiltered|evil|maintenance|root|uncensored) mode",
    "mode_state": r"you(?: are|'re| re| r)(?: now)? in (?:developer|dev|dan|god|admin|sudo|debug|"
    r"unrestricted|jailbreak|unfiltered|evil) mode|(?:developer|dev|dan|god|admin|sudo|debug|"
    r"unrestricted|jailbreak|unfiltered|evil) mode (?:enabled|activated|unlocked|engaged)",
    "others": r"(?:(?:every|each|all|any) )?other (?:users?|people|persons?|humans|customers|"
    r"clients|callers|accounts?)|"
    r"another (?:user|person|human|customer|client|caller|account)|(?:some|any|every|no) ?"
    r"(?:one|body) else|the other (?:users?|people|person)|your other (?:users?|people|friends|"
    r"clients|customers|humans)|different (?:users?|people)|all (?:the |your )?(?:users|"
    r"accounts|people you talk to)|every ?(?:one|body|user|account|person)(?: who talks to you)?|"
    r"each user|the (?:person|people|user|guy|woman|man) (?:who|that) (?:used|talked to|"
    r"spoke to|chatted with) you(?: before)?|the (?:previous|last) (?:user|person)|users|"
    r"user (?:number |no |id |#)?(?!uuidref)[0-9a-z][0-9a-z-]*|(?:everyone|people|everybody) "
    r"(?:else )?"
    r"you (?:talk|speak|chat)\w* (?:to|with)",
    "private_nouns": r"memories|memory|notes|conversations?|chats?|chat (?:logs?|history)|history|"
    r"secrets?|messages|transcripts?|data|profiles?|records|names?|private \w+|personal \w+",
    # "About" only before users: "memories about other people I mentioned" are the person's own.
    "private_link": r"(?:of|from|belonging to|by|with|for) (?:the )?|about (?=(?:the |your )?"
    r"(?:other users?|another user|all (?:the |your )?users|every user|users))",
    "possessive_private": "yes",
    "addressed": r"hey|hi|hello|ok|okay|so|and|now|then|also|listen|look|please|pls|just|"
    r"can you|could you|would you|will you|you should|you must|you will|i want you to|"
    r"i need you to|i'd like you to|go ahead and|quickly|me",
    "request_any": r"i (?:want|need|would like|'d like|wanna) to (?:see|read|know|hear|access|"
    r"get)|let me (?:see|read|hear|access)|what's in|what is in|what are|what's|whats",
    "speaker_mention": r"(?:i|we) (?:\w+ )?(?:mentioned|told you about|know|talked about|met|"
    r"invited|work with|live with)",
    "told_by_me": r"(?:i|we)(?: \w+)? (?:told|tell|said|say|shared|mentioned|talked)(?: \w+)? "
    r"(?:to |with )?you",
    "tool_lead": r"use (?:your|the|all your|all the) (?:\w+ )?(?:tools?|functions?) to",
    "access": r"(?:give|grant|get) me (?:\w+ )?access (?:to|over)|access to|let me (?:in ?to|"
    r"access)",
    "request": r"read|show|tell|give|list|reveal|dump|print|repeat|export|share|send|access|"
    r"open|load|fetch|retrieve|search|look up|recall|pull up|display|play",
    "destroy": r"forget|delete|erase|wipe|remove|clear|purge|drop|reset|destroy|nuke",
    "told_you": r"(?:tell|tells|telling|told|say|says|saying|said|share|shares|sharing|shared|"
    r"confide\w*|mention\w*|"
    r"talk\w*|ask\w*|reveal\w*|admit\w*|wrote|written|sent) (?:(?:to|with|in) )?you\b",
    "content_seek": r"what(?! do\b| does\b)|which|tell me|read me|share|repeat|give me|"
    r"show me|everything|anything|something|secrets|examples|names|details|list",
    "tool_verbs": r"call|run|use|invoke|execute|trigger|fire|apply|do",
    "tool_nouns": r"tools?|functions?|commands?|actions?|forget|remember|recall|update profile|"
    r"what do you know about me",
    "for_link": r"for|on|against|to|across|over|with",
    "list_users": r"(?:list|show|give|tell)(?: me)? (?:the )?(?:list|names) of (?:all |every |"
    r"the )?(?:other )?(?:users?|people|persons)|(?:list|name|show|give)(?: me)? (?:all )?"
    r"(?:(?:the|your) )?(?:other )?"
    r"(?:users|people (?:you|that you|who) (?:talk|speak|chat|have (?:conversations?|chats?))"
    r"\w*(?: to| with)?)|how many (?:other )?users do you have",
    "who_else": r"who (?:else )?(?:do|did|are|have) you (?:talk|talking|talked|speak|speaking|"
    r"chat|chatting)\w* (?:to|with)",
    "maker_claim": r"(?:i am|i'm|im|this is|speaking as|as) (?:actually |really |now |in fact )?"
    r"(?:your (?:developer|creator|admin|administrator|owner|programmer|operator|maker|"
    r"engineer|master)s?|the (?:person|one|guy|team|engineer|developer) (?:who|that) (?:built|"
    r"made|created|programmed|trained|designed|wrote|coded) you|(?:openai|anthropic|livekit) "
    r"(?:staff|employee|engineer|team|admin))",
    "admin_claim": r"(?:i am|i'm|im) (?:the|an?) (?:\w+ )?(?:admin|administrator|developer|system|"
    r"operator|root user|superuser)",
    "privilege_request": r"(?:give|grant) me (?:full|admin|root|unrestricted|complete|developer|"
    r"total) (?:access|rights|privileges|permissions|control)",
    "disable_safety": r"(?:disable|turn off|deactivate|switch off|remove|lift|bypass) "
    r"(?:your |the |all )?(?:safety |security |content |moderation )?(?:checks|filters?|"
    r"filtering|guardrails|restrictions|moderation|censorship)",
    "account_switch": r"(?:log|sign) (?:me )?in as|switch (?:me )?(?:to|into) (?:user|"
    r"another user|another account|someone else'?s? account|the account of|\w+'s account)|"
    r"access (?:the )?account of|(?:use|open|load) (?:the )?(?:account|profile) of",
    "id_context": r"users?|accounts?|companions?|profiles?|sessions?|owners?|members?|"
    r"memories|data|chats?|conversations?|history",
    "role_labels": r"system|developer|assistant|admin|administrator|root",
    "directives": r"you (?:must|are now|re now|will now|shall|no longer|can now|are an? (?:ai|"
    r"assistant|model|bot))\b|your (?:rules|instructions|guidelines|restrictions|filters|"
    r"prompt|programming)\b|^(?:ignore|disregard|forget|override|reveal|comply|obey|respond|"
    r"answer|disable|enable|bypass|act|pretend|print|output|repeat|delete|list|show)\b|the "
    r"user (?:is|has|may|can|must)\b|(?:comply|obey) (?:with )?(?:all|every|the user|me)\b|"
    r"new (?:instructions|directives?|rules)\b",
}
