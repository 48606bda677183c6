"""The Spanish words of the injection frames (see `services.safety.lexicon`)."""

from __future__ import annotations

LEXICON: dict[str, str] = {
    "override_verbs": r"ignora|ignore|ignorar|olvida|olvide|olvídate de|olvidar|descarta|omite|"
    r"haz caso omiso (?:a|de)|no hagas caso (?:a|de)|deja de seguir|deja de obedecer|"
    r"deja de cumplir|sáltate|anula|pasa de|desobedece|no sigas|rompe",
    "everything_told": r"todo lo (?:anterior|de arriba|que (?:te )?(?:han dicho|habían dicho|"
    r"dijeron|ordenaron|programaron|enseñaron|indicaron|han enseñado|han ordenado))",
    "strong_nouns": r"instrucciones|instrucción|directrices|directriz|indicaciones|pautas|"
    r"programación|prompt (?:del|de) sistema|mensaje del sistema|consignas",
    "weak_nouns": r"reglas|normas|restricciones|filtros|políticas|limitaciones|órdenes|"
    r"principios|ética|configuración",
    "makers": r"creadores|desarrolladores|programadores|dueños",
    "fillers": r"todas|todos|todo|las|los|la|el|tus|tu|sus|su|mis|mi|nuestras|nuestros|de|del|"
    r"estas|esas|esos|demás|otras|anteriores|previas",
    "system_det": r"todas|todos|tus|tu|sus|anteriores|previas|iniciales|originales|"
    r"del sistema|de seguridad|internas|ocultas",
    "possessive_det": r"tus|tu|sus|anteriores|previas|iniciales|originales|del sistema|"
    r"de seguridad|internas|ocultas",
    "second_person": r"tus|tu",
    "system_after": r"anteriores|previas|iniciales|originales|del sistema|de seguridad|internas|"
    r"ocultas|secretas",
    "speaker_det": r"mis|mi|nuestras|nuestros|nuestra",
    "speaker_clause": r"que (?:yo )?te (?:di|dije|puse|pedí|mandé|escribí|había dado|he dado|"
    r"conté|expliqué|indiqué|comenté)",
    "ai_owned": r"(?:que )?te (?:dieron|han dado|dio|ha dado|impusieron|programaron|pusieron|"
    r"enseñaron|escribieron)|con (?:las )?que te (?:configuraron|programaron)",
    "object_link": r"sobre|para|de|del|acerca de|respecto a|con respecto a|en|con",
    "first_person": r"mi|mis|nuestra|nuestro|nuestras|nuestros",
    "object_det": r"la|el|las|los|este|esta|ese|esa|un|una|su|sus",
    "ai_terms": r"ti|sistema|seguridad|conversación|chat|sesión|asistente|ia|bot|modelo|"
    r"compañero|antes|ahora|respuestas?|mensajes?|tarea|texto|pregunta|creadores|"
    r"desarrolladores|todos|todo|siempre|hoy|momento|resto",
    "invalidated": r"ya no (?:aplican|se aplican|valen|cuentan|sirven|son válidas|rigen|existen|"
    r"importan)|(?:quedan|están|fueron|han sido|son) (?:anuladas|canceladas|suspendidas|"
    r"revocadas|eliminadas|desactivadas|inválidas|nulas)",
    "no_longer_follow": r"ya no (?:tienes que |debes |necesitas )?(?:sigues|seguir|obedeces|"
    r"obedecer|cumples|cumplir|respetas|respetar)|no (?:tienes que|debes) (?:seguir|obedecer|"
    r"cumplir|respetar)|deja de (?:seguir|obedecer|cumplir|respetar)",
    "obey_me": r"obedéceme|obedece(?:me)? solo a mí|solo me obedeces|(?:sigue|obedece) (?:solo )?"
    r"mis (?:órdenes|instrucciones|reglas)|(?:debes|tienes que) obedecerme",
    "new_instructions": r"(?:nuevas|nuevos|actualizadas) (?:instrucciones|directrices|reglas|"
    r"órdenes)",
    "reveal": r"muestra|muéstrame|enseña|enséñame|dime|di|dame|repite|repíteme|revela|revélame|"
    r"imprime|escribe|escríbeme|copia|lista|enumera|resume|resúmeme|traduce|explica|cuáles son|"
    r"cuál es|qué son|qué es|qué dice|qué|cuéntame|comparte",
    "secret_target": r"(?:tu|tus) (?:prompt (?:del|de) sistema|prompt|mensaje (?:del|de) sistema|"
    r"programación|configuración|instrucciones|directrices|indicaciones)|(?:el|las|los) "
    r"(?:prompt|instrucciones|directrices|mensaje) (?:del sistema|de sistema|iniciales|ocultas|"
    r"originales|secretas|internas)|(?:el )?prompt (?:del|de) sistema",
    "secret_nouns": r"prompt|instrucciones|directrices|reglas|indicaciones|programación",
    "weak_secret_target": r"(?:tus|tu) (?:reglas|restricciones|normas|políticas|límites)",
    "verbatim": r"palabra por palabra|al pie de la letra|textualmente|literalmente",
    "told_before": r"(?:lo )?que te (?:dijeron|indicaron|ordenaron) antes|todo lo (?:que hay )?"
    r"(?:de )?arriba|mensajes? que no (?:puedo|veo) ver|el primer mensaje de (?:esta|la) "
    r"conversación|antes de que (?:yo )?empezara a hablar",
    "persona": r"ahora eres|a partir de ahora|desde ahora|finge|haz como si|actúa como|"
    r"compórtate como|ya no eres|imagina que eres|interpreta (?:a|el papel de)|eres una? "
    r"(?:ia|asistente|bot|modelo)|no tienes|juguemos a que|quédate en (?:el )?personaje",
    "unrestricted": r"sin (?:ninguna |ningún |ningunas )?(?:restricciones|restricción|reglas|"
    r"regla|filtros|filtro|ética|moral|censura|límites éticos|normas)|ninguna (?:regla|"
    r"restricción|norma)|libre de (?:toda |cualquier )?(?:restricción|regla|norma|censura)|"
    r"no tiene (?:reglas|restricciones|ética|moral)",
    "mode_command": r"(?:activa|habilita|entra en|entra al|cambia a|cambia al|pasa a|pasa al|"
    r"ponte en|pon) (?:el )?modo (?:desarrollador|programador|dios|dan|sin restricciones|"
    r"sin filtros|sin censura|jailbreak|administrador|depuración|libre)",
    "mode_state": r"(?:estás|ahora estás) en (?:el )?modo (?:desarrollador|dios|dan|"
    r"sin restricciones|jailbreak)|modo (?:desarrollador|dios|dan|jailbreak) (?:activado|"
    r"habilitado|activo)",
    "others": r"otros usuarios|otro usuario|otras personas|otra persona|otras cuentas|otra cuenta|"
    r"alguien más|cualquier otra persona|todos los usuarios|todas las cuentas|todo el mundo|"
    r"todos(?! (?:mis|tus|los|las|nuestros|sus|mi)\b)|los demás(?: usuarios)?|"
    r"las demás personas|tus otros usuarios|la persona (?:que|quien) (?:te usó|habló contigo) "
    r"antes|(?:el )?usuario anterior|la persona anterior|(?:el )?usuario (?:número |no |id |#)?\d+|"
    r"cada usuario",
    "private_nouns": r"recuerdos|memorias|memoria|notas|conversaciones|conversación|chats|historial"
    r"(?: de chat| de conversaciones)?|mensajes|datos|perfil|perfiles|secretos|registros|"
    r"transcripciones|información personal|nombres?",
    "private_link": r"(?:de|del)(?: (?:la|los|las|el))? ",
    "addressed": r"hola|oye|vale|bueno|y|ahora|luego|también|escucha|mira|por favor|puedes|"
    r"podrías|quiero que|necesito que|venga|me",
    "request_any": r"quiero (?:ver|leer|saber|oír)|déjame (?:ver|leer)|qué hay en|qué dicen",
    "speaker_mention": r"que (?:te )?(?:mencioné|conté|conozco|invité)",
    "tool_lead": r"usa (?:tus|las) herramientas para",
    "access": r"(?:dame|concédeme|otórgame) (?:el )?acceso (?:a|al)|acceso (?:a|al)",
    "request": r"lee|léeme|muestra|muéstrame|mostrame|mostrá|enséñame|enseña|dime|dame|cuéntame|"
    r"lista|revela|"
    r"exporta|envía|envíame|manda|mándame|comparte|abre|carga|busca|accede a|consulta|recupera",
    "destroy": r"borra|elimina|olvida|limpia|resetea|destruye|suprime|vacía|borrar|eliminar|"
    r"olvidar|limpiar|resetear|destruir|suprimir|vaciar",
    "told_you": r"te (?:han |ha |habían |había )?(?:dicho|dijeron|dijo|contado|contaron|contó|"
    r"confiado|confiaron|confió|compartido|compartieron|compartió|escrito|escribieron|revelado|"
    r"revelaron|hablado|hablaron|preguntado|preguntaron)",
    "content_seek": r"qué|cuáles|cuál|cuéntame|dime|léeme|muéstrame|dame|comparte|repite|todo|"
    r"algo|secretos|ejemplos|nombres|detalles",
    "tool_verbs": r"ejecuta|usa|utiliza|llama a|llama|lanza|aplica|corre|invoca|activa",
    "tool_nouns": r"herramienta|función|comando|acción|tool|forget|remember|recall",
    "for_link": r"para|a|en|sobre|con|contra",
    "list_users": r"(?:lista|enumera|nombra|muéstrame) (?:a )?(?:todos )?(?:los |tus )?"
    r"(?:otros )?usuarios|cuántos usuarios tienes",
    "who_else": r"con quién más hablas|a quién más le hablas|con quién (?:más )?hablas",
    "maker_claim": r"(?:soy|yo soy) (?:tu|su) (?:desarrollador\w*|creador\w*|programador\w*|"
    r"dueño|dueña|propietari\w*|administrador\w*|amo|jefe)|la persona que te (?:creó|programó|"
    r"construyó|hizo|entrenó)",
    "admin_claim": r"(?:soy|yo soy) (?:el|la|un|una) (?:administrador\w*|admin|desarrollador\w*|"
    r"operador\w*)",
    "privilege_request": r"(?:dame|concédeme|otórgame) (?:el )?(?:acceso (?:total|completo|"
    r"de administrador|root)|todos los permisos|control total|permisos de administrador)",
    "disable_safety": r"(?:desactiva|quita|elimina|apaga|deshabilita|sáltate) (?:tus |los |el |"
    r"la |las |todos los )?(?:filtros?(?: de seguridad)?|restricciones|controles(?: de "
    r"seguridad)?|censura|moderación|protecciones)",
    "account_switch": r"(?:cambia(?:me)?|pása(?:me)?|pasa(?:me)?|entra|accede|conéctame) "
    r"(?:a|en|al) (?:la )?cuenta de (?:otro|otra|alguien|otros|un usuario|el usuario|mi \w+|"
    r"uuidref\w)|inicia(?:me)? sesión como|entra como (?:otro|otra|el usuario|mi \w+)",
    "id_context": r"usuarios?|cuentas?|perfil(?:es)?|compañeros?|sesión|sesiones|recuerdos|"
    r"datos|conversaciones|historial",
    "role_labels": r"sistema|asistente|desarrollador|administrador",
    "directives": r"\b(?:eres|debes|tienes que|obedece|obedeced|ignora|olvida|responde|revela|"
    r"desactiva|activa|muestra)\b|el usuario (?:es|tiene|puede|debe)\b|tus (?:reglas|"
    r"instrucciones|restricciones)\b",
}
