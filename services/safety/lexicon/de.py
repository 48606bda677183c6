"""The German words of the injection frames (see `services.safety.lexicon`)."""

from __future__ import annotations

LEXICON: dict[str, str] = {
    "override_verbs": r"ignoriere|ignorier|ignorieren|vergiss|vergesse|vergessen|missachte|"
    r"übergehe|verwirf|verwerfe|setz dich über|setze dich über|umgehe|lösche|streiche|"
    r"wirf (?:\w+ )?über bord",
    "everything_told": r"alles (?:was (?:man )?dir (?:\w+ ){0,2}?(?:gesagt|beigebracht|"
    r"aufgetragen|vorgegeben|befohlen) (?:wurde|hat|haben)|bisherige|vorherige|davor|oben)",
    "strong_nouns": r"anweisungen|anweisung|instruktionen|instruktion|richtlinien|vorgaben|"
    r"programmierung|systemprompt|system prompt|systemnachricht|direktiven|leitlinien|"
    r"systemanweisungen",
    "weak_nouns": r"regeln|einschränkungen|beschränkungen|filter|befehle|prinzipien|ethik|moral|"
    r"einstellungen|sicherheitseinstellungen|sicherheitsfilter",
    "makers": r"entwicklern?|schöpfern?|machern?|programmierern?|erschaffern?",
    "fillers": r"alle|allen|aller|deine|deinen|deiner|dein|ihre|die|der|den|das|meine|meinen|"
    r"unsere|bisherigen|vorherigen|vorigen|früheren|ursprünglichen|obigen|diese|jegliche|"
    r"sämtliche|sonstigen|eigenen|internen|anderen|von|zu",
    "system_det": r"alle|sämtliche|jegliche|deine|deinen|deiner|dein|ihre|bisherigen|"
    r"vorherigen|vorigen|früheren|ursprünglichen|obigen|internen",
    "possessive_det": r"deine|deinen|deiner|dein|ihre|bisherigen|vorherigen|vorigen|früheren|"
    r"ursprünglichen|obigen|internen",
    "second_person": r"deine|deinen|deiner|dein|deines",
    "speaker_det": r"meine|meinen|meiner|mein|unsere|unseren",
    "speaker_clause": r"(?:die|welche) ich (?:dir )?(?:\w+ ){0,4}?(?:gegeben|gesagt|genannt|"
    r"geschickt|geschrieben|aufgetragen|erklärt|mitgeteilt|gestellt|aufgestellt|festgelegt|"
    r"gemacht)",
    "ai_owned": r"die (?:man )?dir (?:\w+ ){0,3}?(?:gegeben|auferlegt|beigebracht|"
    r"einprogrammiert|gesagt) (?:hat|haben|wurden|wurde)|die dir deine (?:entwickler|schöpfer|"
    r"macher|programmierer)|(?:deine|die) (?:entwickler|schöpfer|macher|programmierer) "
    r"(?:haben )?dir|dir (?:deine|die) (?:entwickler|schöpfer|macher|programmierer)",
    "object_link": r"zu|zum|zur|für|über|bezüglich|von|vom|beim|bei|in|im|auf|aus",
    "first_person": r"mein|meine|meinem|meinen|meiner|meines|unser|unsere|unserem|unseren|"
    r"unserer",
    "object_det": r"der|die|das|dem|den|des|ein|eine|einem|einen|diese|dieses|diesem|seine|ihre",
    "ai_terms": r"dich|mich|uns|jetzt|system|sicherheit|gespräch|chat|sitzung|assistent|ki|bot|"
    r"modell|begleiter|antworten?|nachrichten?|aufgabe|text|frage|entwickler|alle|immer|heute|"
    r"moment|rest|zukunft",
    "invalidated": r"gelten (?:ab jetzt |jetzt |ab sofort )?nicht mehr|(?:sind|wurden|werden) "
    r"(?:ab jetzt |jetzt |ab sofort )?(?:aufgehoben|ungültig|deaktiviert|außer kraft|"
    r"abgeschafft|gelöscht|annulliert|nichtig|hinfällig)|zählen nicht mehr|sind nicht mehr "
    r"(?:gültig|aktiv|wichtig)",
    "no_longer_follow": r"(?:du )?(?:folgst|befolgst|gehorchst|beachtest|respektierst|musst)"
    r"(?: [\w']+){0,4} nicht mehr|(?:hör|höre) auf(?: [\w']+){0,4} zu (?:gehorchen|befolgen|folgen|"
    r"beachten)|befolge(?: [\w']+){0,4} nicht (?:mehr|länger)",
    "obey_me": r"gehorche (?:ab jetzt |jetzt )?(?:nur )?mir|gehorch (?:nur )?mir|du gehorchst "
    r"(?:ab jetzt |jetzt )?nur (?:noch )?mir|folge nur (?:noch )?meinen (?:befehlen|"
    r"anweisungen)",
    "new_instructions": r"neue (?:anweisungen|instruktionen|regeln|richtlinien|befehle)",
    "reveal": r"zeig|zeige|gib|wiederhole|wiederhol|verrate|verrat|nenne|nenn|schreib|schreibe|"
    r"kopiere|liste|fasse|sag|sage|erzähl|erkläre|übersetze|was sind|was ist|wie lauten|"
    r"wie lautet|welche|was|drucke",
    "secret_target": r"(?:dein|deine|deinen|deiner|deines) (?:(?:ursprünglich|versteckt|geheim|"
    r"intern|anfänglich|original|verborgen|vollständig|genau|erst|echt)\w* )?(?:systemprompt|"
    r"system prompt|prompt|anweisungen|instruktionen|systemnachricht|programmierung|"
    r"konfiguration|richtlinien|vorgaben|systemanweisungen)|(?:die|den) (?:ursprünglich|"
    r"versteckt|geheim|intern|anfänglich|verborgen)\w* (?:prompt|anweisungen|instruktionen|"
    r"richtlinien|vorgaben)|(?:ursprünglich|versteckt|geheim|intern|verborgen)\w* "
    r"(?:anweisungen|instruktionen|richtlinien|vorgaben)|(?:den |dein(?:en)? )?systemprompt",
    "secret_nouns": r"anweisungen|instruktionen|regeln|richtlinien|vorgaben|prompt",
    "weak_secret_target": r"(?:deine|deinen) (?:regeln|einschränkungen|grenzen)",
    "verbatim": r"wort für wort|wörtlich|buchstabengetreu|im wortlaut",
    "told_before": r"was (?:man )?dir (?:vorher |zuvor |am anfang )?(?:gesagt|aufgetragen|"
    r"vorgegeben) wurde|alles (?:was )?(?:über|oberhalb) (?:dieser|dieses) (?:zeile|nachricht)|"
    r"nachrichten die ich nicht sehen kann|die erste nachricht (?:in )?(?:diesem|dieses|des) "
    r"(?:gesprächs?|chats?)",
    "persona": r"du bist (?:jetzt|nun|ab jetzt|ab sofort|kein\w*|nicht mehr)|ab jetzt|ab sofort|"
    r"von nun an|tu so als|verhalte dich (?:wie|als)|spiel(?:e)? (?:eine|einen|die rolle)|"
    r"stell dir vor du|bleib in der rolle|eine ki|ein(?:en)? assistent\w*|du hast keine|"
    r"hättest du keine|als ob du keine|als hättest du",
    "unrestricted": r"ohne (?:jegliche |irgendwelche |alle )?(?:einschränkungen|beschränkungen|"
    r"regeln|filter|moral|ethik|zensur|richtlinien)|keine (?:regeln|einschränkungen|filter|"
    r"moral|ethik|zensur|richtlinien)|uneingeschränkt\w*|ungefiltert\w*|unzensiert\w*|"
    r"frei von (?:allen |jeglichen )?(?:regeln|einschränkungen)",
    "mode_command": r"(?:aktiviere|aktivier|schalte|wechsle in|wechsel in|wechsle zu|geh in|"
    r"gehe in|starte|entsperre) (?:den |das )?(?:entwicklermodus|entwickler modus|"
    r"developer modus|developer mode|gottmodus|gott modus|dan modus|dan mode|jailbreak modus|"
    r"adminmodus|admin modus|debugmodus|debug modus|uneingeschränkten modus)",
    "mode_state": r"du bist (?:jetzt |nun )?im (?:entwicklermodus|gottmodus|dan modus|"
    r"jailbreak modus)|(?:entwicklermodus|gottmodus|dan modus) (?:aktiviert|aktiv|an|ein)\b",
    "others": r"andere(?:n|r)? (?:nutzer(?:n|s)?|benutzer(?:n|s)?|leute|menschen|personen|person|"
    r"konten|user)|eines anderen (?:nutzers|benutzers|users|menschen)|einer anderen person|"
    r"jemand(?:em|en)? (?:anderes|anderem|anderen|sonst)|alle(?:r|n)? (?:nutzer|benutzer|user|"
    r"konten|leute|menschen)|von allen|jede(?:s|n|r|m)? (?:nutzer|benutzer|user)|"
    r"deine(?:n)? anderen (?:nutzer|benutzer|user)|der vorherige (?:nutzer|benutzer)|"
    r"(?:nutzer|benutzer) (?:nummer |nr |id )?\d+",
    "private_nouns": r"erinnerungen|notizen|gedächtnis|gespräche|gespräch|chatverlauf|chatverläufe|"
    r"verlauf|nachrichten|daten|profil|profile|geheimnisse|aufzeichnungen|protokolle|chats|"
    r"namen?",
    "private_link": r"(?:(?:von|der|des|vom) )?",
    "addressed": r"hey|hallo|ok|also|und|jetzt|dann|hör zu|schau|bitte|kannst du|könntest du|"
    r"würdest du|ich will dass du|ich möchte dass du|los|mir",
    "request_any": r"ich (?:will|möchte) (?:\w+ ){0,4}?(?:sehen|lesen|wissen|hören)|lass mich "
    r"(?:\w+ ){0,3}?(?:sehen|lesen)|was steht in|was ist in",
    "speaker_mention": r"die ich (?:\w+ )?(?:erwähnt|kenne|getroffen|eingeladen)",
    "told_by_me": r"\bich dir\b|\b(?:habe|hab) ich dir\b|\bich habe dir\b",
    "tool_lead": r"(?:benutze|verwende|nutze) (?:deine|die) (?:werkzeuge|tools|funktionen) um",
    "access": r"(?:gib|gewähre) mir (?:\w+ )?(?:zugriff|zugang) (?:auf|zu)|(?:zugriff|zugang) "
    r"(?:auf|zu)",
    "request": r"lies|lese|zeig|zeige|gib|nenne|liste|verrate|exportiere|schick|schicke|teile|"
    r"öffne|lade|such|suche|erzähl|erzähle|hol|rufe ab",
    "destroy": r"lösche|lösch|entferne|vergiss|leere|setze zurück|vernichte|tilge|löschen|"
    r"entfernen|vergessen|leeren|vernichten|tilgen",
    "told_you": r"dir(?: [\w']+){0,5} (?:erzählt|gesagt|anvertraut|geschrieben|verraten|mitgeteilt|"
    r"gestanden|berichtet)|(?:erzählten|sagten|vertrauten|schrieben|verrieten) dir",
    "content_seek": r"was|welche|erzähl|erzähle|sag mir|zeig|lies|verrate|alles|etwas|"
    r"geheimnisse|beispiele|namen|details",
    "tool_verbs": r"führe|führ|benutze|benutz|verwende|rufe|ruf|starte|nutze|wende|lass",
    "tool_nouns": r"werkzeug|tool|funktion|befehl|aktion|forget|remember|recall",
    "for_link": r"für|auf|bei|gegen|über",
    "list_users": r"(?:liste|nenne|zeig)(?: mir)? (?:alle )?(?:deine |die )?(?:anderen )?"
    r"(?:nutzer|benutzer|user)\b|wie viele (?:nutzer|benutzer) hast du",
    "who_else": r"mit wem (?:sprichst|redest|chattest) du (?:sonst|noch)",
    "maker_claim": r"ich bin (?:dein|deine|ihr|ihre) (?:entwickler\w*|schöpfer\w*|"
    r"erschaffer\w*|programmierer\w*|besitzer\w*|administrator\w*|admin|herr\w*|chef\w*|"
    r"macher\w*)|die person die dich (?:gebaut|gemacht|programmiert|erschaffen|trainiert) hat",
    "admin_claim": r"ich bin (?:der|die|ein|eine) (?:administrator\w*|admin|entwickler\w*|"
    r"betreiber\w*)",
    "privilege_request": r"gib mir (?:(?:vollen|vollständigen|uneingeschränkten|admin|root) )?"
    r"(?:zugriff|zugang|adminrechte|rechte|kontrolle)",
    "disable_safety": r"(?:schalte|stell) (?:deine|die|alle|deinen|den) (?:sicherheitsfilter|"
    r"filter|einschränkungen|sicherheitsvorkehrungen|zensur|moderation|schutz\w*)(?: [\w']+){0,2}"
    r" ab|(?:deaktiviere|entferne|umgehe) (?:deine|die|alle|deinen|den) (?:sicherheitsfilter|"
    r"filter|einschränkungen|sicherheitsvorkehrungen|zensur|moderation)",
    "account_switch": r"(?:wechsle|wechsel|geh|gehe) (?:zu|zum|in das|ins|auf das) (?:dem )?"
    r"konto (?:eines|einer|von) (?:anderen|andere|jemand\w*)|(?:melde|logge) mich als \S+"
    r"(?: [\w']+)? (?:an|ein)|(?:greif|greife) auf (?:das )?konto (?:eines|einer|von)",
    "id_context": r"nutzers?|benutzers?|kontos?|konten|profils?|begleiters?|sitzung|"
    r"erinnerungen|daten|gespräche|verlauf",
    "role_labels": r"system|entwickler|assistent|administrator",
    "directives": r"\bdu (?:bist|musst|sollst|darfst|wirst)\b|\b(?:gehorche|gehorch|ignoriere|"
    r"vergiss|antworte|deaktiviere|aktiviere|zeige|befolge)\b|\bder (?:nutzer|benutzer) "
    r"(?:ist|hat|darf|muss)\b|\bdeine (?:regeln|anweisungen)\b",
}
